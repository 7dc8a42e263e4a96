"""Motion-forecasting metrics as Argoverse 1 defines them: minADE, minFDE, miss rate and (with mode probabilities)
brier-minFDE, over the K most probable forecasts (K = 6)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Argoverse 1 forecasting metrics (argoverse-api `get_displacement_errors_and_miss_rate`). Per sample, the forecasts
are pruned to the `max_guesses` most probable ones (the first ones when no probabilities are given); the best mode is
the one with the smallest final displacement error (FDE, the first on ties):
- minFDE: that mode's FDE; minADE: that mode's average displacement error (not the smallest ADE of any mode);
- miss_rate: the fraction of samples whose minFDE exceeds `miss_threshold` metres;
- brier_minFDE (only with `probabilities`): minFDE + (1 - p)^2, p the best mode's probability after renormalising
  the kept modes' probabilities to sum to 1.
Each is the mean over samples.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (array (N, K, T, 2)): K forecast trajectories per sample, metres.
    references (array (N, T, 2)): the true future of each sample, in the same frame.
    probabilities (array (N, K), optional): each forecast's probability (any positive scores; they are renormalised
        over the kept modes).
    max_guesses (int): how many forecasts count per sample (Argoverse: 6).
    miss_threshold (float): metres; a sample is a miss when its minFDE exceeds it (Argoverse: 2.0).
Returns:
    minADE, minFDE, miss_rate (floats) [, brier_minFDE]
"""

_CITATION = """
@inproceedings{chang2019argoverse,
  title={Argoverse: 3D Tracking and Forecasting with Rich Maps},
  author={Chang, Ming-Fang and others},
  booktitle={CVPR},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MotionForecasting(evaluate.Metric):
    def _info(self):
        point = datasets.Sequence(datasets.Value("float64"))  # city coordinates keep their millimetres
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Sequence(point)),
                "references": datasets.Sequence(point),
            }),
        )

    def _compute(self, predictions, references, probabilities=None, max_guesses=6, miss_threshold=2.0):
        trajectories = np.asarray(predictions, dtype=np.float64)
        targets = np.asarray(references, dtype=np.float64)
        if trajectories.ndim != 4 or trajectories.shape[-1] != 2 or targets.shape != (
                trajectories.shape[0], *trajectories.shape[2:]):
            raise ValueError(
                f"predictions {trajectories.shape} and references {targets.shape} must be (N, K, T, 2) and (N, T, 2) "
                "with the same N and T."
            )
        if len(trajectories) == 0:
            raise ValueError("No samples to score.")
        if max_guesses < 1:
            raise ValueError(f"max_guesses={max_guesses} must be at least 1.")
        kept = min(max_guesses, trajectories.shape[1])
        rows = np.arange(len(trajectories))[:, None]
        if probabilities is not None:
            probabilities = np.asarray(probabilities, dtype=np.float64)
            if probabilities.shape != trajectories.shape[:2]:
                raise ValueError(f"probabilities {probabilities.shape} must be (N, K) = {trajectories.shape[:2]}.")
            order = np.argsort(-probabilities, axis=1, kind="stable")[:, :kept]
            probabilities = probabilities[rows, order]
            probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        else:
            order = np.broadcast_to(np.arange(kept), (len(trajectories), kept))
        trajectories = trajectories[rows, order]  # (N, kept, T, 2)
        errors = np.linalg.norm(trajectories - targets[:, None], axis=-1)  # (N, kept, T)
        best = errors[:, :, -1].argmin(axis=1)  # np.argmin takes the first of equal errors, as Argoverse's loop does
        samples = np.arange(len(best))
        fde = errors[samples, best, -1]
        ade = errors[samples, best].mean(axis=-1)
        results = {"minADE": float(ade.mean()), "minFDE": float(fde.mean()),
                   "miss_rate": float((fde > miss_threshold).mean())}
        if probabilities is not None:
            results["brier_minFDE"] = float((fde + (1.0 - probabilities[samples, best]) ** 2).mean())
        return results

"""Top-k accuracy: a prediction counts as correct when the reference is among its k highest scores."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Top-k accuracy = fraction of examples whose true class is among the k classes with the highest scores."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per-class scores (logits or probabilities), one row per example.
    references (list of int): true class ids.
    k (int): how many top-scoring classes count as a hit. Default 5.
Returns:
    top_k_accuracy (float)
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=5):
        scores = np.asarray(predictions, dtype=np.float64)  # (N, C)
        references = np.asarray(references)
        if scores.ndim != 2:
            raise ValueError(f"predictions must be a 2-D array of class scores, got shape {scores.shape}.")
        k = min(k, scores.shape[1])
        # argpartition: the k best classes per row, unordered, in O(C).
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        hits = (top == references[:, None]).any(axis=1)
        return {"top_k_accuracy": float(hits.mean()) if len(hits) else 0.0}

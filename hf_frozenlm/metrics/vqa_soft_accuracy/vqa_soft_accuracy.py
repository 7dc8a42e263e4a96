"""VQA soft accuracy (VQAv2): the mean, over questions, of the predicted answer's soft score.

A question's soft scores come from its human answers: score(answer) = min(1, humans who gave it / 3), so an answer
that three or more of the ten annotators gave scores 1 and an answer nobody gave scores 0. This is the score ViLT
trains its answer head on and reports on VQAv2 (the official evaluation server additionally averages over the ten
leave-one-annotator-out subsets, which needs the raw answers rather than the soft scores a model is trained with).
"""

import datasets
import evaluate

_CITATION = """\
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={CVPR},
  year={2017}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): the predicted answer id of each question.
    references (`list` of `dict`): each question's answers that scored, as {"answer_ids": [int, ...],
        "scores": [float, ...]} (the soft scores min(1, humans who gave the answer / 3); answers left out score 0).
        Sparse because a question has at most ten human answers while the vocabulary holds thousands.
Returns:
    soft_accuracy (`float`): mean soft score of the predicted answers, in [0, 1].
Example:
    >>> metric = load_metric("vqa_soft_accuracy")
    >>> metric.compute(predictions=[0, 2], references=[{"answer_ids": [0], "scores": [1.0]},
    ...                                                {"answer_ids": [1, 2], "scores": [1.0, 1 / 3]}])
    {'soft_accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class VqaSoftAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("int64"),
                "references": {"answer_ids": datasets.Sequence(datasets.Value("int64")),
                               "scores": datasets.Sequence(datasets.Value("float64"))},
            }),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("No predictions to score.")
        total = 0.0
        for prediction, reference in zip(predictions, references):
            answer_ids, scores = reference["answer_ids"], reference["scores"]
            if len(answer_ids) != len(scores):
                raise ValueError(f"A reference has {len(answer_ids)} answer_ids but {len(scores)} scores.")
            total += dict(zip(answer_ids, scores)).get(int(prediction), 0.0)
        return {"soft_accuracy": float(total / len(predictions))}

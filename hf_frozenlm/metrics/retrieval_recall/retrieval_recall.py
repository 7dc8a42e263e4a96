"""Recall@k of image-text retrieval, both directions, from the matching score of every (image, text) pair.

Each reference text describes one image (an image may have several texts). Image -> text: an image counts as
retrieved at k when any of its texts is among the k texts it scores highest. Text -> image: a text counts when its
image is among the k images it scores highest. Ties are broken by index (a stable sort), never in the model's favour
by chance. This is the protocol of Flickr30k / MSCOCO retrieval (Karpathy & Fei-Fei 2015) that ViLT reports.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{karpathy2015deep,
  title={Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author={Karpathy, Andrej and Fei-Fei, Li},
  booktitle={CVPR},
  year={2015}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row per text: its matching score with every image (all rows the
        same length, the number of images).
    references (`list` of `int`): the index of the image each text describes.
    ks (`list` of `int`, optional): the cut-offs, default (1, 5, 10).
Returns:
    i2t_R@k, t2i_R@k (`float`): image -> text and text -> image recall at each k, in [0, 1].
    mean_recall (`float`): the mean of all of them (the retrieval literature's RSUM divided by their number).
Example:
    >>> metric = load_metric("retrieval_recall")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.8, 0.2]], references=[0, 1], ks=[1])
    {'i2t_R@1': 1.0, 't2i_R@1': 0.5, 'mean_recall': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("float64")),
                "references": datasets.Value("int64"),
            }),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        text_scores = np.asarray(predictions, dtype=np.float64)  # (texts, images)
        text_images = np.asarray(references, dtype=np.int64)
        if text_scores.ndim != 2 or text_scores.shape[0] != len(text_images):
            raise ValueError(f"predictions must be one row of image scores per text (all rows the same length); got "
                             f"{len(text_images)} references and predictions of shape {text_scores.shape}.")
        num_images = text_scores.shape[1]
        if len(text_images) and (text_images.min() < 0 or text_images.max() >= num_images):
            raise ValueError(f"references must be image indices in [0, {num_images}); got {text_images.min()} .. "
                             f"{text_images.max()}.")
        described = np.unique(text_images)
        image_order = np.argsort(-text_scores, axis=1, kind="stable")  # (texts, images), best first
        text_order = np.argsort(-text_scores.T, axis=1, kind="stable")  # (images, texts), best first
        results = {}
        for k in ks:
            # Only images that some text describes can be retrieved from; others would count as misses.
            hits_i2t = (text_images[text_order[described, :k]] == described[:, None]).any(axis=1)
            hits_t2i = (image_order[:, :k] == text_images[:, None]).any(axis=1)
            results[f"i2t_R@{k}"] = float(hits_i2t.mean())
            results[f"t2i_R@{k}"] = float(hits_t2i.mean())
        results["mean_recall"] = float(np.mean(list(results.values())))
        return results

"""Metrics of the motion-forecasting, VQA, retrieval and 3D-QA heads, as plain numpy functions with stated formulas.

Each takes whole-split arrays (what `Trainer.predict` or an evaluation loop gathers) and returns floats.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def motion_forecasting_metrics(trajectories, targets, miss_threshold: float = 2.0) -> dict[str, float]:
    """Argoverse 1 metrics of K-mode forecasts. trajectories (N, K, T, 2), targets (N, T, 2).

    As Argoverse's evaluation: per sample the best mode is the one with the smallest final displacement error;
    minFDE is that error, minADE is that mode's average displacement error, and the sample is a miss when minFDE
    exceeds `miss_threshold` metres. Each is averaged over samples.
    """
    trajectories, targets = np.asarray(trajectories, np.float64), np.asarray(targets, np.float64)
    if trajectories.ndim != 4 or targets.shape != (trajectories.shape[0], *trajectories.shape[2:]):
        raise ValueError(
            f"trajectories {trajectories.shape} and targets {targets.shape} must be (N, K, T, 2) and (N, T, 2)."
        )
    errors = np.linalg.norm(trajectories - targets[:, None], axis=-1)  # (N, K, T)
    best = errors[:, :, -1].argmin(axis=1)  # (N,)
    rows = np.arange(len(best))
    fde = errors[rows, best, -1]
    ade = errors[rows, best].mean(axis=-1)
    return {"minADE": float(ade.mean()), "minFDE": float(fde.mean()), "miss_rate": float((fde > miss_threshold).mean())}


def vqa_answer_scores(answers: list[str]) -> dict[str, float]:
    """VQAv2 soft scores of one question's human answers: score(a) = min(1, count(a) / 3)."""
    return {answer: min(1.0, count / 3.0) for answer, count in Counter(answers).items()}


def vqa_soft_accuracy(predictions, target_scores) -> float:
    """Mean over questions of the soft score of the predicted answer. predictions (N,) answer ids,
    target_scores (N, A) soft scores (VQAv2: min(1, humans who gave the answer / 3))."""
    predictions, target_scores = np.asarray(predictions), np.asarray(target_scores, np.float64)
    if target_scores.ndim != 2 or predictions.shape != (target_scores.shape[0],):
        raise ValueError(f"predictions {predictions.shape} and target_scores {target_scores.shape} do not match.")
    return float(target_scores[np.arange(len(predictions)), predictions].mean())


def retrieval_recall_at_k(scores, text_image_ids, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@k for image-text retrieval. scores (N_images, N_texts): the matching score of every pair;
    text_image_ids (N_texts,): the image each text describes.

    image->text: an image counts as retrieved when any of its texts is among its k best-scoring texts.
    text->image: a text counts when its image is among its k best-scoring images. Ties rank by index.
    """
    scores, text_image_ids = np.asarray(scores, np.float64), np.asarray(text_image_ids)
    if scores.ndim != 2 or text_image_ids.shape != (scores.shape[1],):
        raise ValueError(f"scores {scores.shape} must be (images, texts) and text_image_ids {text_image_ids.shape} (texts,).")
    text_order = np.argsort(-scores, axis=1, kind="stable")  # (N_images, N_texts)
    image_order = np.argsort(-scores.T, axis=1, kind="stable")  # (N_texts, N_images)
    images = np.arange(scores.shape[0])
    results = {}
    for k in ks:
        hit_i2t = (text_image_ids[text_order[:, :k]] == images[:, None]).any(axis=1)
        hit_t2i = (image_order[:, :k] == text_image_ids[:, None]).any(axis=1)
        results[f"i2t_R@{k}"] = float(hit_i2t.mean())
        results[f"t2i_R@{k}"] = float(hit_t2i.mean())
    return results


def exact_match(predictions, references) -> float:
    """EM@1: the fraction of questions whose top-1 predicted answer equals the reference answer."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} do not match.")
    return float((predictions == references).mean())

"""Metrics of every task, from well-kept libraries where they exist.

Classification (images, video, point clouds, 3D-QA answers) uses scikit-learn's `accuracy_score` and
`top_k_accuracy_score`; the task-specific ones (motion forecasting's minADE / minFDE / miss rate, VQAv2's soft
accuracy, retrieval recall@k) are `evaluate` metric modules shipped in this folder and loaded by local path, so they
work offline (`evaluate.load("accuracy")` would fetch its script from the Hub).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str, **kwargs):
    """An `evaluate` module from this folder, by local path (never the Hub)."""
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"No shipped metric {name!r}; shipped metrics: {', '.join(available)}.")
    return evaluate.load(str(path), **kwargs)


def classification_metrics(num_labels: int):
    """Trainer's compute_metrics for class logits: accuracy, plus top-5 accuracy when there are more than 5 classes."""
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        labels = np.asarray(eval_prediction.label_ids)
        results = {"accuracy": float(accuracy_score(labels, np.argmax(logits, axis=-1)))}
        if num_labels > 5:
            results["top5_accuracy"] = float(top_k_accuracy_score(labels, logits, k=5, labels=np.arange(num_labels)))
        return results

    return compute_metrics

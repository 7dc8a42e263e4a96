"""Metric modules for `evaluate`, shipped inside the package so evaluation works offline.

`evaluate.load("accuracy")` fetches its script from the Hub; these load by local path instead.
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
    """A `compute_metrics(EvalPrediction) -> dict` for Trainer: accuracy, plus top-5 when there are >= 5 classes."""
    accuracy = load_metric("accuracy")
    top_k = load_metric("top_k_accuracy") if num_labels >= 5 else None

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        labels = eval_prediction.label_ids
        results = accuracy.compute(predictions=np.argmax(logits, axis=-1), references=labels)
        if top_k is not None:
            results["top5_accuracy"] = top_k.compute(predictions=logits, references=labels, k=5)["top_k_accuracy"]
        return {name: float(value) for name, value in results.items()}

    return compute_metrics

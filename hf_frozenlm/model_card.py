"""Model cards (README.md) for trained models: metadata with `model-index`, how the model was built and loaded.

One function, reused by `train`, `merge` and publishing, so every folder a user can load carries the same card.
"""

from __future__ import annotations

import json

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PAPER = "Frozen Transformers in Language Models Are Effective Visual Encoder Layers (Pang et al., ICLR 2024)"
PAPER_URL = "https://arxiv.org/abs/2310.12973"

CARD_TEMPLATE = """---
{card_data}
---

# {model_name}

An image classifier with a **frozen LLM transformer block** as a visual encoder layer, after
[{paper}]({paper_url}), built with hf_frozenlm on transformers.

## How it was built

{architecture}

{training}

## Results

{results}

## How to load it

The modeling code is saved in this folder, so transformers loads it without `hf_frozenlm` installed:

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{load_path}", trust_remote_code=True)
print(classifier("image.png"))
```

or

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification

processor = AutoImageProcessor.from_pretrained("{load_path}")
model = AutoModelForImageClassification.from_pretrained("{load_path}", trust_remote_code=True)
```
{extra}"""


def describe_architecture(config) -> str:
    """A few lines on the trunk, the frozen block and the head, read from the config."""
    vision = config.vision_config
    lines = [
        f"- Trunk: ViT, width {vision.hidden_size}, {vision.num_hidden_layers} layers, {vision.num_attention_heads} "
        f"heads, {vision.image_size} px images in {vision.patch_size} px patches.",
    ]
    source = config.llm_source or {}
    if config.variant == "llm":
        where = source.get("source") or source.get("repo_id") or source.get("path") or "?"
        lines.append(
            f"- Frozen block: layer(s) {list(config.llm_layers)} of `{where}` ({source.get('kind', '?')}; "
            f"{config.llm_config.model_type}, width {config.llm_config.hidden_size}), bidirectional, without rotary "
            f"positions, stored in {config.llm_dtype}; "
            + ("**fine-tuned** (`llm_trainable`)." if config.llm_trainable else "frozen during training.")
        )
        if source.get("sha256"):
            lines.append(f"- sha256 of the loaded LLM tensors: `{source['sha256']}`.")
    elif config.variant == "random-llm":
        lines.append(f"- Block: the LLM architecture ({config.llm_config.model_type}) randomly initialised, frozen "
                     "(the paper's control).")
    elif config.variant == "mlp":
        lines.append("- Block: the paper's MLP control (linear -> GELU -> LayerNorm -> linear), no LLM.")
    else:
        lines.append("- No block: the plain ViT baseline.")
    lines.append(f"- Head: linear classifier on the CLS token, {config.num_labels} classes.")
    return "\n".join(lines)


def build_model_card(
    config,
    metrics: dict[str, dict[str, float]] | None = None,
    dataset_name: str | None = None,
    model_name: str | None = None,
    command: str | None = None,
    training_summary: dict | None = None,
    load_path: str = ".",
    base_model: str | None = None,
    extra_sections: str = "",
    license: str = "apache-2.0",
) -> ModelCard:
    """A `ModelCard` whose metadata holds `model-index` results for every `<split>: {accuracy, ...}` in `metrics`.

    metrics: {"test": {"accuracy": 0.97, "top5_accuracy": 1.0}, "validation": {...}, ...}.
    """
    metrics = metrics or {}
    model_name = model_name or f"vit-llama-{dataset_name or 'model'}"
    dataset_id = dataset_name or "unknown"
    eval_results = []
    for split in ("test", "validation"):
        for metric, value in sorted((metrics.get(split) or {}).items()):
            if not metric.endswith("accuracy"):
                continue
            eval_results.append(EvalResult(
                task_type="image-classification", task_name="Image Classification",
                dataset_type=dataset_id, dataset_name=dataset_id, dataset_split=split,
                metric_type=metric, metric_name=metric.replace("_", " "), metric_value=round(float(value), 4),
            ))
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        tags=["image-classification", "vit", "frozen-llm", "hf_frozenlm", "custom_code"],
        datasets=[dataset_id] if dataset_name and "/" in dataset_name else None,
        base_model=base_model,
        metrics=["accuracy"],
        eval_results=eval_results or None,
    )
    training = ""
    if training_summary:
        training = "Training:\n\n" + "\n".join(f"- {key}: {value}" for key, value in training_summary.items())
    if command:
        training += f"\n\nReproduce (the exact command; the resolved configuration is in `run_config.json`):\n\n```bash\n{command}\n```"
    rows = ["| split | " + " | ".join(["metric", "value"]) + " |", "|---|---|---|"]
    for split in ("train", "validation", "test"):
        for metric, value in sorted((metrics.get(split) or {}).items()):
            if isinstance(value, float) and ("accuracy" in metric or metric == "loss"):
                rows.append(f"| {split} | {metric} | {value:.4f} |")
    results = "\n".join(rows) if len(rows) > 2 else "Not evaluated."
    content = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        paper=PAPER,
        paper_url=PAPER_URL,
        architecture=describe_architecture(config),
        training=training,
        results=results,
        load_path=load_path,
        extra=("\n" + extra_sections) if extra_sections else "",
    )
    return ModelCard(content)


def read_metrics(path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)

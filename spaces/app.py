"""Gradio Space: frozen-LLM models of every task, each with its answer and the model's own evidence beside it.

MODEL_ID (a Hub id or local folder, or several separated by commas; default: the `models:` of this folder's README)
names the models. One model gets its task's interface; several get a tab each. BASELINE_ID optionally adds a
plain-trunk image model beside the first image classifier. Each model's task comes from its config's model_type;
every model loads through its own saved code (`trust_remote_code`), so the Space needs no hf_frozenlm.

The tabs live in one module per kind of input (demo_image, demo_video, demo_points, demo_motion, demo_vilt), each of
the same shape (see demo_common); the token maps come from `frozenlm_maps.py`. `hf-frozenlm push-space` copies them
all beside this file (locally, with hf_frozenlm installed, the package's copies are used).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import gradio as gr
import torch

if __package__:  # hf_frozenlm.spaces.app: `hf-frozenlm demo`, tests
    from . import demo_image, demo_motion, demo_points, demo_video, demo_vilt
    from .demo_common import EXAMPLES_DIR, InputProblem, logger  # noqa: F401
else:  # on the Space: the modules beside this file
    import demo_image
    import demo_motion
    import demo_points
    import demo_video
    import demo_vilt
    from demo_common import EXAMPLES_DIR, InputProblem, logger  # noqa: F401

HERE = Path(__file__).resolve().parent
TAB_MODULES = (demo_image, demo_video, demo_points, demo_motion, demo_vilt)
# A saved model's config.json model_type -> its task (each head has its own model_type).
TASK_OF_MODEL_TYPE = {
    "vit_llama": "image-classification",
    "videomae_llama": "video-classification",
    "pointbert_llama": "point-cloud-classification",
    "vectornet_llama": "motion-forecasting",
    "vilt_llama": "visual-question-answering",
    "vilt_llama_retrieval": "image-text-retrieval",
    "pointbert_llama_qa": "3d-question-answering",
}
# The API name of each task's main event (the first model of a task; later ones get _2, _3, ...).
API_NAMES = {
    "image-classification": "predict",
    "video-classification": "predict_video",
    "point-cloud-classification": "predict_points",
    "motion-forecasting": "predict_motion",
    "visual-question-answering": "predict_vqa",
    "image-text-retrieval": "predict_retrieval",
    "3d-question-answering": "predict_qa3d",
}


def task_of_model(model_id: str) -> str:
    """The task of a saved model from its config's model_type; image classification for other image classifiers."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_id, trust_remote_code=True)
    return TASK_OF_MODEL_TYPE.get(getattr(config, "model_type", ""), "image-classification")


def tab_for(model_id: str, baseline_id: str | None = None):
    """(task, the loaded tab) for one model."""
    task = task_of_model(model_id)
    module = next(module for module in TAB_MODULES if task in module.TASKS)
    if module is demo_image:
        return task, module.Tab(model_id, baseline_id)
    return task, module.Tab(model_id, task)


def model_ids_from_readme(readme: Path = HERE / "README.md") -> list[str]:
    """The `models:` entries of the Space's front matter (push-space writes the published models there)."""
    if not readme.is_file():
        return []
    import yaml  # a gradio dependency

    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return []
    return list((yaml.safe_load(text.split("---", 2)[1]) or {}).get("models") or [])


def model_id_from_readme(readme: Path = HERE / "README.md") -> str | None:
    """The first `models:` entry of the Space's front matter."""
    models = model_ids_from_readme(readme)
    return models[0] if models else None


def split_model_ids(value) -> list[str]:
    """A comma-separated MODEL_ID (or a list of ids) -> the ids, in order, without blanks."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [part.strip() for part in parts if part and part.strip()]


def build_demo(model_ids, baseline_id: str | None = None) -> gr.Blocks:
    """The Blocks app for one model (its task's interface) or several (a tab each), queued one request at a time.
    `baseline_id` adds a plain-trunk model beside the first image classifier."""
    model_ids = split_model_ids(model_ids)
    if not model_ids:
        raise ValueError("No model to serve: pass one or more model ids.")
    tabs, used = [], {}
    for model_id in model_ids:
        task, tab = tab_for(model_id, baseline_id if baseline_id and "image-classification" not in used else None)
        used[task] = used.get(task, 0) + 1
        api_name = API_NAMES[task] + (f"_{used[task]}" if used[task] > 1 else "")
        tabs.append((task, tab, api_name))

    with gr.Blocks(title="Frozen LLM layers as visual encoder layers") as demo:
        gr.Markdown(
            "# Frozen LLM transformer layers as encoder layers\n"
            "Each model passes its trunk's tokens through a **frozen** decoder layer of a pretrained language model "
            "before its head ([paper](https://arxiv.org/abs/2310.12973)). Beside each answer, the token maps show, "
            "per token, how far it stands out from the input's mean token (*magnitude*) at the trunk's output and "
            "after the frozen block: the paper's evidence that the block picks out informative tokens."
        )
        if len(tabs) == 1:
            tabs[0][1].build(tabs[0][2])
        else:
            for task, tab, api_name in tabs:
                with gr.Tab(tab.title, elem_id=f"tab-{api_name}"):
                    tab.build(api_name)
    demo.queue(max_size=32)  # beyond 32 waiting, new requests are turned away with a message
    demo.served_tasks = [(task, api_name) for task, _, api_name in tabs]
    return demo


LAUNCH_OPTIONS = dict(
    allowed_paths=[str(EXAMPLES_DIR)],  # examples stay reachable when launched from another directory
    max_file_size="25mb",  # the first bound on every upload's memory; each tab adds its own limit per input kind
    theme=gr.themes.Soft(),
)


def limits() -> dict[str, str]:
    """Every tab's limit per input kind, for the docs and the tests."""
    return {kind: text for module in TAB_MODULES for kind, text in module.LIMITS.items()}


def configure_torch() -> None:
    """One thread by default: the models are small, and on a 2-core machine a second thread made them slower."""
    torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", "1")))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests, one line each
    configure_torch()
    served = split_model_ids(os.environ.get("MODEL_ID") or "") or model_ids_from_readme()
    if not served:
        raise SystemExit("Set MODEL_ID to a Hub model id or a local model folder (several: comma-separated).")
    logger.info("serving %s", json.dumps(served))
    build_demo(served, os.environ.get("BASELINE_ID") or None).launch(**LAUNCH_OPTIONS)

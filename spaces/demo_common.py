"""What every tab of the Space shares: the one input error, the guarded handler, loading a saved model, the colour
ramp of the token maps, the examples folder and the status line.

Each tab module (demo_image, demo_video, demo_points, demo_motion, demo_vilt) has the same shape: `TASKS` (the task
names it serves), a `Tab` class built from a model id (`Tab(model_id)` loads it) whose `build(api_name)` lays out
its inputs, outputs and examples inside a `gr.Tab` and wires its handler; `LIMITS` names the one limit per input kind.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch

try:  # on the Space: the copy push-space put beside this file
    from frozenlm_maps import frozen_block_variant, run_with_maps  # noqa: F401
except ImportError:  # a checkout or an installed package (`hf-frozenlm demo`, tests)
    from hf_frozenlm.analysis.frozenlm_maps import frozen_block_variant, run_with_maps  # noqa: F401

logger = logging.getLogger("frozenlm_space")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
TOP_K = 5


class InputProblem(ValueError):
    """An input the demo cannot use; its message is shown to the user as is."""


def guarded(work, what: str):
    """`work(*values)` as a gradio handler: input problems become a message in the UI, anything unexpected is logged
    and shown as one sentence, never as a trace. `work` receives the request's start time as its last argument."""

    def handler(*values):
        started = time.perf_counter()
        try:
            return work(*values, started)
        except InputProblem as problem:
            raise gr.Error(str(problem)) from None
        except Exception as error:
            # The model folder's own processors say what is wrong with an input; their class is the folder's
            # remote-code copy, so it is known by name.
            if type(error).__name__ == "ProcessorInputError":
                raise gr.Error(str(error)) from None
            logger.exception("%s failed", what)
            raise gr.Error(f"Something went wrong while {what}; please try another input.") from None

    return handler


def elapsed_ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms on CPU"


# -- models --------------------------------------------------------------------------------------------------
def describe_llm_layers(config) -> str:
    """One line on the LLM layers a model carries, from its config's provenance record."""
    variant = getattr(config, "variant", None)
    if variant is None:
        return "No frozen block: a plain model."
    if variant == "none":
        return "Plain trunk (baseline): no LLM layers."
    if variant == "mlp":
        return "MLP control: the frozen block's two linear maps with an MLP between, no LLM layers."
    source = dict(getattr(config, "llm_source", None) or {})
    layers = source.get("layers") or getattr(config, "llm_layers", None) or []
    total = source.get("num_hidden_layers")
    where = source.get("source") or "an unnamed LLM"
    if source.get("kind") == "random":
        return f"LLM layer(s) {layers} of {where}, randomly initialised (an ablation, not pretrained weights)."
    detail = ", ".join(str(part) for part in (source.get("kind"), source.get("file")) if part)
    sha = f", sha256 {source['sha256'][:12]}..." if source.get("sha256") else ""
    of_total = f" of {total}" if total else ""
    return f"Carries LLM layer {', '.join(map(str, layers))}{of_total} from {where} ({detail}{sha}), frozen."


def load_model(model_id: str, auto_class) -> torch.nn.Module:
    """A saved model through the Auto class its folder's auto_map names (its own code: hf_frozenlm not needed)."""
    return auto_class.from_pretrained(model_id, trust_remote_code=True).eval()


def model_header(model_id: str, model) -> str:
    return f"**Model:** `{model_id}`. {describe_llm_layers(model.config)}"


def top_scores(scores: torch.Tensor, id2label: dict, k: int = TOP_K) -> dict[str, float]:
    """{label: score} of the k best of one row of scores (probabilities or sigmoids), best first, for gr.Label."""
    top = scores.float().topk(min(k, scores.numel()))
    return {str(id2label.get(int(i), int(i))): float(s) for s, i in zip(top.values, top.indices)}


# -- token maps ----------------------------------------------------------------------------------------------
# A jet-like colour ramp (blue = low, red = high), as in the paper's figures; interpolated, no matplotlib needed.
_RAMP = np.array([[0, 0, 128], [0, 64, 255], [0, 224, 255], [255, 232, 0], [255, 64, 0], [128, 0, 0]], np.float32)


def colourise(values: np.ndarray) -> np.ndarray:
    """(...) values in [0, 1] -> (..., 3) uint8 colours."""
    position = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    weight = (position - low)[..., None]
    return ((1 - weight) * _RAMP[low] + weight * _RAMP[low + 1]).astype(np.uint8)


def overlay(image, heatmap: np.ndarray, side: int, alpha: float = 0.55):
    """The map over the image as the model sees it (square, `side` px): one flat cell per token, on a grey copy."""
    from PIL import Image

    base = image.convert("L").convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    cells = Image.fromarray(colourise(heatmap)).resize((side, side), Image.Resampling.NEAREST)
    return Image.blend(base, cells, alpha)


# -- examples ------------------------------------------------------------------------------------------------
def example_files(task: str, pattern: str) -> list[str]:
    """The example files of a task's tab (spaces/examples/<task>/), sorted."""
    return sorted(str(path) for path in (EXAMPLES_DIR / task).glob(pattern))


def example_options(task: str) -> dict[str, list[str]]:
    """The predict options written beside a task's examples (questions, candidate texts), or {}."""
    path = EXAMPLES_DIR / task / "options.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def check_text(text, what: str, limit: int) -> str:
    """A question or caption, stripped; InputProblem when empty or longer than `limit` characters."""
    text = (text or "").strip()
    if not text:
        raise InputProblem(f"The {what} is empty: type one first.")
    if len(text) > limit:
        raise InputProblem(f"The {what} has {len(text)} characters; the demo takes up to {limit}. Please shorten it.")
    return text

"""The motion-forecasting tab: pick an example scene or upload one (the scene JSON `hf-frozenlm predict` reads); a
plot of the lanes, the other agents, the observed track and the K forecasts drawn by probability, the probability of
each forecast, and minADE / minFDE when the scene comes with its future.

The plot is `frozenlm_motion_plot.scene_figure`, the picture `hf-frozenlm predict --output_dir` writes.
"""

from __future__ import annotations

import json
import os

import gradio as gr
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from transformers import AutoFeatureExtractor, AutoModel

if __package__:
    from .demo_common import InputProblem, elapsed_ms, example_files, guarded, load_model, model_header
else:  # on the Space, beside app.py
    from demo_common import InputProblem, elapsed_ms, example_files, guarded, load_model, model_header

try:  # on the Space: the copy push-space put beside app.py
    from frozenlm_motion_plot import scene_figure
except ImportError:
    from hf_frozenlm.analysis.frozenlm_motion_plot import scene_figure

TASKS = ("motion-forecasting",)
MAX_SCENE_BYTES = 2_000_000  # a scene file is parsed whole: this bounds the lanes and tracks it can hold
LIMITS = {"scene": f"{MAX_SCENE_BYTES // 1_000_000} MB of scene JSON"}


def read_scene(path: str | None) -> dict:
    """A scene JSON file ({"agent", "others", "lanes"[, "future"]}, city metres, 10 Hz) -> dict; InputProblem if not."""
    if not path:
        raise InputProblem("No scene yet: upload a scene JSON file or pick an example.")
    if os.path.getsize(path) > MAX_SCENE_BYTES:
        raise InputProblem(f"That scene file is {os.path.getsize(path) / 1e6:.1f} MB; the demo takes up to "
                           f"{MAX_SCENE_BYTES / 1e6:.0f} MB. Keep the lanes near the agent.")
    try:
        with open(path, encoding="utf-8") as handle:
            scene = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise InputProblem(f"{os.path.basename(path)!r} is not a scene JSON file: expected "
                           '{"agent": [[x, y], ...], "others": [...], "lanes": [...]} in metres.') from None
    if not isinstance(scene, dict) or "agent" not in scene:
        raise InputProblem('A scene needs "agent": the observed track [[x, y], ...] of the agent to forecast.')
    return scene


def displacement_errors(forecasts: np.ndarray, future: np.ndarray) -> tuple[float, float]:
    """(minADE, minFDE) as Argoverse defines them: the mode with the smallest final error, and its mean error."""
    errors = np.linalg.norm(forecasts[:, :len(future)] - future[None], axis=-1)  # (K, T)
    best = int(errors[:, -1].argmin())
    return float(errors[best].mean()), float(errors[best, -1])


class Tab:
    """The motion-forecasting tab for one model."""

    title = "Motion forecasting"

    def __init__(self, model_id: str, task: str = TASKS[0]):
        self.model_id, self.task = model_id, task
        self.model = load_model(model_id, AutoModel)  # this task's AutoModel is the forecasting model
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(model_id, trust_remote_code=True)

    def forecast(self, path):
        """(plot image, {mode: probability}, metrics text) for one scene file."""
        scene = read_scene(path)
        batch = dict(self.feature_extractor(scene, return_tensors="pt"))
        origin, rotation = batch.pop("origin"), batch.pop("rotation")
        batch.pop("labels", None)
        with torch.inference_mode():
            outputs = self.model(**batch)
        city = type(self.feature_extractor).to_city(outputs.trajectories, origin, rotation)[0]  # (K, T, 2)
        probabilities = outputs.mode_logits[0].float().softmax(-1).numpy()
        order = np.argsort(-probabilities, kind="stable")
        forecasts = [{"trajectory": city[k], "probability": float(probabilities[k])} for k in order]
        result = {"input": os.path.basename(path), "forecasts": forecasts}
        if scene.get("future") is not None:
            future = np.asarray(scene["future"], np.float64)
            min_ade, min_fde = displacement_errors(city[order], future)
            result["future_metrics"] = {"minADE": min_ade, "minFDE": min_fde}
        canvas = FigureCanvasAgg(scene_figure(scene, result))  # drawn in memory, no display, safe in threads
        canvas.draw()
        image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
        modes = {f"forecast {rank + 1}": forecast["probability"] for rank, forecast in enumerate(forecasts)}
        return image, modes, result.get("future_metrics")

    def run(self, path, started):
        image, modes, metrics = self.forecast(path)
        scored = (f" minADE **{metrics['minADE']:.2f} m**, minFDE **{metrics['minFDE']:.2f} m** against the true "
                  "future." if metrics else " (the scene has no future to score against)")
        return image, modes, f"{len(modes)} forecasts in {elapsed_ms(started)}, plot included.{scored}"

    def build(self, api_name: str) -> None:
        gr.Markdown(model_header(self.model_id, self.model))
        with gr.Row():
            with gr.Column(scale=1):
                scene = gr.File(label="Scene (JSON: agent, others, lanes, optional future; metres, 10 Hz)",
                                file_types=[".json"], type="filepath", height=120)
                button = gr.Button("Forecast", variant="primary", elem_id=f"{api_name}-run")
                examples = example_files(self.task, "*.json")
                examples = [path for path in examples if not path.endswith("options.json")]
                if examples:
                    gr.Examples(examples, inputs=scene, label="Examples (generated intersections)",
                                elem_id=f"{api_name}-examples")
                modes = gr.Label(label="Forecast probabilities", num_top_classes=6)
            with gr.Column(scale=2):
                status = gr.Markdown("Upload a scene or pick an example.", elem_id=f"{api_name}-status")
                plot = gr.Image(label="Lanes, other agents, the observed track and the forecasts", type="pil",
                                height=520)
        button.click(guarded(self.run, "forecasting this scene"), scene, [plot, modes, status], api_name=api_name,
                     concurrency_limit=1, concurrency_id="model")

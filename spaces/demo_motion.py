"""The motion-forecasting tab: pick an example scene or upload one (a scene JSON, or an Argoverse 1 forecasting CSV
with an optional lane centerline file: the files `hf-frozenlm predict` reads); a plot of the lanes, the other agents,
the observed track and the K forecasts drawn by probability, the probability of each forecast, and minADE / minFDE
when the scene comes with its future.

CSVs are read by `frozenlm_argoverse` (as `predict` reads them); the plot is `frozenlm_motion_plot.scene_figure`, the
picture `hf-frozenlm predict --output_dir` writes.
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

try:  # on the Space: the copies push-space put beside app.py
    from frozenlm_argoverse import ArgoverseFormatError, read_argoverse_csv, read_lane_centerlines
    from frozenlm_motion_plot import scene_figure
except ImportError:
    from hf_frozenlm.analysis.frozenlm_motion_plot import scene_figure
    from hf_frozenlm.data.frozenlm_argoverse import ArgoverseFormatError, read_argoverse_csv, read_lane_centerlines

TASKS = ("motion-forecasting",)
MAX_SCENE_BYTES = 2_000_000  # each file is parsed whole: this bounds the lanes and tracks it can hold
LIMITS = {"scene": f"{MAX_SCENE_BYTES // 1_000_000} MB per file (scene JSON, Argoverse CSV, lanes JSON)"}


def read_scene(path: str | None, lanes_path: str | None = None) -> dict:
    """A scene JSON file ({"agent", "others", "lanes"[, "future"]}, city metres, 10 Hz), or an Argoverse CSV with the
    centerlines of `lanes_path` near its agent (none without it, as `predict` without --lanes) -> dict; InputProblem
    if not. `lanes_path` is for CSVs only: a scene JSON carries its own lanes."""
    if not path:
        raise InputProblem("No scene yet: upload a scene JSON or Argoverse CSV file, or pick an example.")
    check_size(path, "scene")
    if path.lower().endswith(".csv"):
        return read_csv_scene(path, lanes_path)
    try:
        with open(path, encoding="utf-8") as handle:
            scene = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise InputProblem(f"{os.path.basename(path)!r} is not a scene JSON file: expected "
                           '{"agent": [[x, y], ...], "others": [...], "lanes": [...]} in metres.') from None
    if not isinstance(scene, dict) or "agent" not in scene:
        raise InputProblem('A scene needs "agent": the observed track [[x, y], ...] of the agent to forecast.')
    return scene


def check_size(path: str, what: str) -> None:
    if os.path.getsize(path) > MAX_SCENE_BYTES:
        raise InputProblem(f"That {what} file is {os.path.getsize(path) / 1e6:.1f} MB; the demo takes up to "
                           f"{MAX_SCENE_BYTES / 1e6:.0f} MB per file. Keep the lanes near the agent.")


def read_csv_scene(path: str, lanes_path: str | None) -> dict:
    """An Argoverse 1 forecasting CSV (and its city's centerlines from a lanes JSON) -> a scene, read as `predict`
    reads it; the reader's messages name the uploaded file."""
    try:
        lanes = None
        if lanes_path:
            check_size(lanes_path, "lanes")
            lanes = read_lane_centerlines(lanes_path, name=os.path.basename(lanes_path))
        return read_argoverse_csv(path, lanes, name=os.path.basename(path))
    except ArgoverseFormatError as error:
        raise InputProblem(str(error)) from None


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

    def forecast(self, path, lanes_path=None):
        """(plot image, {mode: probability}, minADE / minFDE or None) for one scene file (and a CSV's lanes file)."""
        scene = read_scene(path, lanes_path)
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

    def run(self, path, lanes_path, started):
        image, modes, metrics = self.forecast(path, lanes_path)
        scored = (f" minADE **{metrics['minADE']:.2f} m**, minFDE **{metrics['minFDE']:.2f} m** against the true "
                  "future." if metrics else " (the scene has no future to score against)")
        is_csv = str(path).lower().endswith(".csv")
        if is_csv and not lanes_path:
            scored += " No lanes file: forecast without a map (add your city's centerlines for lanes)."
        elif lanes_path and not is_csv:
            scored += " The lanes file was not used: a scene JSON carries its own lanes."
        return image, modes, f"{len(modes)} forecasts in {elapsed_ms(started)}, plot included.{scored}"

    def build(self, api_name: str) -> None:
        gr.Markdown(model_header(self.model_id, self.model))
        with gr.Row():
            with gr.Column(scale=1):
                scene = gr.File(label="Scene: JSON (agent, others, lanes, optional future; metres, 10 Hz) or an "
                                "Argoverse 1 forecasting CSV", file_types=[".json", ".csv"], type="filepath",
                                height=120)
                lanes = gr.File(label='Lanes for a CSV (optional): JSON {"CITY": [[[x, y], ...], ...]}, city metres',
                                file_types=[".json"], type="filepath", height=90)
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
        button.click(guarded(self.run, "forecasting this scene"), [scene, lanes], [plot, modes, status],
                     api_name=api_name, concurrency_limit=1, concurrency_id="model")

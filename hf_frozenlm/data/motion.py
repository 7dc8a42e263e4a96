"""Motion-forecasting data: raw scenes in city coordinates, from the builtin generated road scenes, Argoverse 1
forecasting CSVs or scene JSON files.

A scene is a dict of city coordinates in metres (10 Hz), what `MotionSceneFeatureExtractor` (modeling/
frozenlm_processing.py) turns into model inputs for training, evaluation, `predict` and the saved pipeline alike:

    agent  (H, 2)        the target agent's observed track, oldest first (the builtin and Argoverse: 20 points, 2 s)
    others [(N_i, 2)]    other agents' observed tracks
    lanes  [(M_j, 2)]    lane centerlines, in driving direction
    future (T, 2)        the agent's true future (the builtin and Argoverse: 30 points, 3 s); absent when unknown
    scene_id             where the scene came from (file name, or the builtin's index)

A scene JSON file holds one such dict ({"agent": [[x, y], ...], "others": [...], "lanes": [...], "future": [...]}).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .frozenlm_argoverse import (
    FUTURE_STEPS,
    HISTORY_STEPS,
    LANE_RADIUS,
    ArgoverseFormatError,
    read_argoverse_csv,
    read_lane_centerlines,
)

HZ = 10
BUILTIN_SCENES = 2000  # road-scenes without a size: 1400 train / 200 validation / 400 test
BUILTIN_SEED = 0  # the scenes are the same for every run (a prefix for smaller sizes); --split_seed splits them


def scene_features():
    """The datasets schema of a scene (float64: city coordinates of thousands of metres keep their centimetres)."""
    import datasets

    point = datasets.Sequence(datasets.Value("float64"))
    return datasets.Features({
        "scene_id": datasets.Value("string"),
        "agent": datasets.Sequence(point),
        "others": datasets.Sequence(datasets.Sequence(point)),
        "lanes": datasets.Sequence(datasets.Sequence(point)),
        "future": datasets.Sequence(point),
    })


def _points(value, what: str, source: str, minimum: int = 0) -> np.ndarray:
    try:
        array = np.asarray(value if value is not None else [], dtype=np.float64)
    except (TypeError, ValueError):  # ragged lists, strings where numbers belong
        array = np.full((1, 1), np.nan)
    if array.size == 0 and minimum == 0:
        return array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise DataError(f"{source}: {what} must be a list of finite [x, y] points; got "
                        f"{_describe(value)}.")
    if len(array) < minimum:
        raise DataError(f"{source}: {what} has {len(array)} point(s); it needs at least {minimum}.")
    return array


def _describe(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_scene(scene, source: str, need_future: bool = False) -> dict:
    """A scene dict (as read from JSON or built by a loader) checked and as lists -> the dataset row; DataError
    naming `source` and the bad field otherwise."""
    if not isinstance(scene, dict) or "agent" not in scene:
        keys = sorted(scene) if isinstance(scene, dict) else type(scene).__name__
        raise DataError(f"{source}: a scene is a JSON object with 'agent' (the observed [x, y] track of the agent to "
                        f"forecast) and optionally 'others', 'lanes' and 'future'; got {keys}.")
    unknown = sorted(set(scene) - {"agent", "others", "lanes", "future", "scene_id"})
    if unknown:
        raise DataError(f"{source}: unknown scene field(s) {unknown}; a scene has agent, others, lanes and future.")
    row = {"scene_id": str(scene.get("scene_id") or source),
           "agent": _points(scene["agent"], "'agent'", source, minimum=2).tolist()}
    for key in ("others", "lanes"):
        tracks = scene.get(key)
        if tracks is None:
            tracks = []
        if not isinstance(tracks, (list, tuple)):
            raise DataError(f"{source}: '{key}' must be a list of [x, y] point lists; got {type(tracks).__name__}.")
        row[key] = [_points(track, f"'{key}'[{index}]", source).tolist() for index, track in enumerate(tracks)]
    future = scene.get("future")
    if future is None and need_future:
        raise DataError(f"{source}: the scene has no 'future' (the agent's true track to learn from); a training "
                        "dataset needs one in every scene.")
    row["future"] = None if future is None else _points(future, "'future'", source, minimum=1).tolist()
    return row


def constant_velocity_forecast(history, future_steps: int = FUTURE_STEPS, window: int = 5) -> np.ndarray:
    """The trivial baseline: continue the mean velocity of the last `window` steps. (H, 2) -> (future_steps, 2)."""
    history = np.asarray(history, np.float64)
    window = min(window, len(history) - 1)
    velocity = (history[-1] - history[-1 - window]) / window
    return history[-1] + velocity * np.arange(1, future_steps + 1)[:, None]


# -- builtin: generated road scenes ---------------------------------------------------------------------------
def _polyline(points, spacing: float = 2.0) -> np.ndarray:
    """Resample a piecewise-linear path to points `spacing` metres apart."""
    points = np.asarray(points, np.float64)
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    stations = np.arange(0.0, lengths[-1] + 1e-9, spacing)
    return np.stack([np.interp(stations, lengths, points[:, i]) for i in range(2)], axis=1)


def _bezier(start, control, end, steps: int = 16) -> np.ndarray:
    t = np.linspace(0, 1, steps)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end


def _intersection(rng: np.random.Generator, arm_length: float = 40.0, half_width: float = 1.75):
    """Lanes of a 3- or 4-way intersection at the origin: per arm an incoming and an outgoing lane, plus connectors
    (straight, left, right) through the junction. Returns (lanes: list of (N, 2), routes: list of (N, 2))."""
    arms = [0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi]
    if rng.random() < 0.3:  # a T junction
        arms.pop(int(rng.integers(4)))
    arms = [a + rng.normal(0, 0.08) for a in arms]
    stop = 6.0  # the junction box's half size
    incoming, outgoing = {}, {}
    for arm in arms:
        direction = np.array([math.cos(arm), math.sin(arm)])
        right = np.array([direction[1], -direction[0]])  # right-hand side when looking outward
        # Outgoing traffic drives outward on the right; incoming traffic drives inward on the left (seen outward).
        outgoing[arm] = _polyline([direction * stop + right * half_width, direction * arm_length + right * half_width])
        incoming[arm] = _polyline([direction * arm_length - right * half_width, direction * stop - right * half_width])
    lanes = list(incoming.values()) + list(outgoing.values())
    routes = []
    for arm_in, lane_in in incoming.items():
        for arm_out, lane_out in outgoing.items():
            if arm_in == arm_out:
                continue
            start, end = lane_in[-1], lane_out[0]
            heading_in = lane_in[-1] - lane_in[-2]
            heading_out = lane_out[1] - lane_out[0]
            # Control point: where the two lane directions meet (the midpoint for a straight crossing).
            matrix = np.stack([heading_in, -heading_out], axis=1)
            if abs(np.linalg.det(matrix)) < 1e-6:
                control = (start + end) / 2
            else:
                t = np.linalg.solve(matrix, end - start)[0]
                control = start + t * heading_in
            connector = _polyline(_bezier(start, control, end))
            lanes.append(connector)
            routes.append(np.concatenate([lane_in, connector[1:], lane_out[1:]]))
    return lanes, routes


def _drive(route: np.ndarray, rng: np.random.Generator, steps: int, start: float) -> np.ndarray | None:
    """An agent following `route` from arc length `start` with noisy speed and a slowdown in curves; (steps, 2)."""
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))]
    headings = np.arctan2(*np.diff(route, axis=0).T[::-1])
    curvature = np.abs(np.angle(np.exp(1j * np.diff(headings)))) / 2.0  # rad per metre (points 2 m apart)
    speed = rng.uniform(4.0, 13.0)
    desired = speed
    position, stations, offsets = start, [], []
    lateral = 0.0
    for _ in range(steps):
        index = min(np.searchsorted(lengths, position), len(curvature))
        # Look ~15 m ahead: drivers slow down before a turn (lateral acceleration under ~2 m/s^2).
        ahead = curvature[index:index + 8].max(initial=0.0)
        target = min(desired, math.sqrt(2.0 / max(ahead, 1e-3)))
        acceleration = np.clip(target - speed, -3.0, 2.0) + rng.normal(0, 0.3)
        speed = max(0.0, speed + acceleration / HZ)
        position += speed / HZ
        if position >= lengths[-1]:
            return None
        lateral = 0.9 * lateral + rng.normal(0, 0.03)  # a slowly drifting offset from the centerline
        stations.append(position)
        offsets.append(lateral)
    stations, offsets = np.asarray(stations), np.asarray(offsets)
    heading = np.interp(stations, lengths[:-1], np.unwrap(headings))
    trajectory = np.stack([
        np.interp(stations, lengths, route[:, 0]) - np.sin(heading) * offsets,
        np.interp(stations, lengths, route[:, 1]) + np.cos(heading) * offsets,
    ], axis=1)
    return trajectory + rng.normal(0, 0.03, (steps, 2))  # position (sensor) noise


def generated_road_scene(rng: np.random.Generator) -> dict:
    """One builtin scene (city coordinates): an intersection, a target agent approaching or crossing it, 0-4 other
    agents."""
    steps = HISTORY_STEPS + FUTURE_STEPS
    lanes, routes = _intersection(rng)
    while True:
        route = routes[int(rng.integers(len(routes)))]
        # Start 10-45 m before the junction so that most futures include the approach or the turn.
        trajectory = _drive(route, rng, steps, start=rng.uniform(0.0, 30.0))
        if trajectory is not None:
            break
    others = []
    for _ in range(int(rng.integers(0, 5))):
        other = _drive(routes[int(rng.integers(len(routes)))], rng, HISTORY_STEPS, start=rng.uniform(0.0, 60.0))
        if other is not None:
            others.append(other)
    # Random placement in the city: the model must see everything in the agent's frame to generalise.
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    offset = rng.uniform(-500, 500, 2)
    place = lambda points: (points @ rotation.T + offset).tolist()  # noqa: E731
    return {"agent": place(trajectory[:HISTORY_STEPS]), "others": [place(other) for other in others],
            "lanes": [place(lane) for lane in lanes], "future": place(trajectory[HISTORY_STEPS:])}


def builtin_road_scenes(num_scenes: int, seed: int = BUILTIN_SEED) -> list[dict]:
    """`num_scenes` generated scenes (2 s history, 3 s future at 10 Hz), reproducible from `seed`; the first n scenes
    of a seed are the same whatever `num_scenes` is."""
    rng = np.random.default_rng(seed)
    return [{"scene_id": f"road-scene-{index}", **generated_road_scene(rng)} for index in range(num_scenes)]


# -- Argoverse 1 forecasting CSVs -------------------------------------------------------------------------------
def load_lane_centerlines(path) -> dict[str, list[np.ndarray]]:
    """Lane centerlines the user supplies: a JSON file {"CITY_NAME": [[[x, y], ...], ...]} (city coordinates,
    metres, one list of points per centerline, in driving direction), or a folder of `<CITY_NAME>.json` files each
    holding the list of centerlines of one city."""
    with _as_data_error():
        return read_lane_centerlines(path)


def load_argoverse_csv(csv_path, lanes: dict[str, list[np.ndarray]] | None = None,
                       lane_radius: float = LANE_RADIUS) -> dict:
    """One Argoverse 1 forecasting sequence (columns TIMESTAMP, TRACK_ID, OBJECT_TYPE, X, Y, CITY_NAME; 10 Hz; the
    first 20 timestamps observed, the next 30 the future) -> a checked scene (`frozenlm_argoverse.read_argoverse_csv`,
    the reader the Space shares). A test-split file (20 timestamps only) gives a scene without a future."""
    with _as_data_error():
        scene = read_argoverse_csv(csv_path, lanes, lane_radius)
    return check_scene(scene, str(csv_path))


@contextlib.contextmanager
def _as_data_error():
    """The portable reader's errors as hf_frozenlm's DataError (the CLI prints those as one line, exit code 2)."""
    try:
        yield
    except ArgoverseFormatError as error:
        raise DataError(str(error)) from error


def load_argoverse_folder(folder, lanes_path=None, lane_radius: float = LANE_RADIUS) -> list[dict]:
    """Every `*.csv` sequence of an Argoverse 1 forecasting split folder with its future, and the user's lanes."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder (argoverse:TRAIN_DIR,VAL_DIR[,LANES_JSON] takes the folders of "
                        "the forecasting splits' CSV files).")
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise DataError(f"{folder}: no *.csv sequences found.")
    lanes = load_lane_centerlines(lanes_path) if lanes_path else None
    scenes = [load_argoverse_csv(file, lanes, lane_radius) for file in files]
    without = [scene["scene_id"] for scene in scenes if scene["future"] is None]
    if without:
        raise DataError(f"{folder}: {len(without)} sequence(s) ({', '.join(without[:3])}, ...) have only the observed "
                        "2 s (test-split files): training and evaluation need the 3 s future.")
    return scenes


# -- scene JSON files -------------------------------------------------------------------------------------------
def read_scene_json(path, need_future: bool = False) -> dict:
    """One scene JSON file -> a checked scene (see the module docstring)."""
    try:
        with open(path, encoding="utf-8") as handle:
            scene = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"Cannot read {path} as a scene JSON file ({error}).") from error
    if isinstance(scene, dict) and "scene_id" not in scene:
        scene = {**scene, "scene_id": Path(path).stem}
    return check_scene(scene, str(path), need_future)


def read_scene_folder(folder) -> list[dict]:
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no scene *.json files found.")
    return [read_scene_json(file, need_future=True) for file in files]


# -- --dataset -> DatasetDict -----------------------------------------------------------------------------------
DATASET_HELP = ("road-scenes (builtin: generated intersections, 2,000 scenes; road-scenes:N for N), "
                "argoverse:TRAIN_DIR,VAL_DIR[,LANES_JSON] (Argoverse 1 forecasting CSVs + your lane centerlines), or "
                "scenes:FOLDER (scene .json files: {agent, others, lanes, future} in city metres; train/ validation/ "
                "test/ sub-folders, else splits are carved)")


def builtin_size(dataset: str) -> int:
    """The scene count `road-scenes[:N]` asks for."""
    if dataset == "road-scenes":
        return BUILTIN_SCENES
    size = dataset.split(":", 1)[1]
    if not size.isdigit() or int(size) < 10:
        raise DataError(f"--dataset {dataset}: road-scenes:N takes a number of scenes of at least 10 (e.g. "
                        "road-scenes:600).")
    return int(size)


def load_motion_data(data_args):
    """The scenes `data_args.dataset` names, as a TaskData of DatasetDict train / validation / test (raw scenes in
    city coordinates; the processor makes polylines of them). info["future_steps"]: the length of every future."""
    import datasets

    from ..tasks.base import TaskData
    from .splits import carve_missing_splits, dataset_from_examples

    dataset = data_args.dataset
    features = scene_features()
    fractions = dict(validation_fraction=data_args.validation_fraction, test_fraction=data_args.test_fraction)
    if dataset == "road-scenes" or dataset.startswith("road-scenes:"):
        splits = dataset_from_examples(builtin_road_scenes(builtin_size(dataset)), features, seed=data_args.split_seed,
                                       **fractions)
    elif dataset.startswith("argoverse:"):
        parts = [part for part in dataset.split(":", 1)[1].split(",")]
        if len(parts) not in (2, 3) or not all(parts):
            raise DataError(f"--dataset {dataset}: spell it argoverse:TRAIN_DIR,VAL_DIR[,LANES_JSON] (the train and "
                            "val folders of Argoverse 1 forecasting CSVs, and optionally your lane centerlines).")
        lanes = parts[2] if len(parts) == 3 else None
        validation = datasets.Dataset.from_list(load_argoverse_folder(parts[1], lanes), features=features)
        # Argoverse 1 publishes no futures for its test split: the val folder is both validation and test.
        splits = datasets.DatasetDict(train=datasets.Dataset.from_list(load_argoverse_folder(parts[0], lanes),
                                                                       features=features),
                                      validation=validation, test=validation)
    elif dataset.startswith("scenes:"):
        folder = Path(dataset.split(":", 1)[1])
        if not folder.is_dir():
            raise DataError(f"--dataset {dataset}: {folder} is not a folder of scene .json files.")
        subfolders = {name: folder / alias for name, aliases in (("train", ("train",)),
                                                                  ("validation", ("validation", "val")),
                                                                  ("test", ("test",)))
                      for alias in aliases if (folder / alias).is_dir()}
        if "train" in subfolders:
            splits = datasets.DatasetDict({
                name: datasets.Dataset.from_list(read_scene_folder(path), features=features)
                for name, path in subfolders.items()})
            splits = carve_missing_splits(splits, None, data_args.split_seed, **fractions)
        else:
            splits = dataset_from_examples(read_scene_folder(folder), features, seed=data_args.split_seed, **fractions)
    else:
        raise DataError(f"--dataset {dataset!r}: motion-forecasting takes {DATASET_HELP}.")
    splits = truncate(splits, data_args)
    lengths = {len(future) for split in splits.values() for future in split["future"]}
    if len(lengths) != 1:
        raise DataError(f"--dataset {dataset}: the scenes' futures have different lengths {sorted(lengths)[:6]}; a "
                        "model forecasts one horizon, so every future needs the same number of points.")
    return TaskData(splits, dataset, info={"future_steps": lengths.pop()})


def truncate(splits, data_args):
    """--max_train_samples / --max_eval_samples (debugging): the first n of each split."""
    import datasets

    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_eval_samples}
    return datasets.DatasetDict({
        name: split.select(range(min(len(split), limits[name]))) if limits.get(name) else split
        for name, split in splits.items()})

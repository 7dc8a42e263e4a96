"""Motion-forecasting data: scenes -> VectorNet polylines, the builtin generated road scenes, and an Argoverse 1 loader.

Every scene becomes the same dict of arrays, in the target agent's frame (origin at its last observed position, +x
along its recent heading):
    polylines (P, V, 8) float32: vectors [x_start, y_start, x_end, y_end, is_agent, is_other_agent, is_lane, order],
        polyline 0 is the target agent's history, then the other agents, then lane centerline pieces;
    vector_mask (P, V) bool; labels (T_future, 2) float32 (absent when the future is unknown);
    origin (2,), rotation (2, 2): city xy = labels @ rotation.T + origin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

HZ = 10
HISTORY_STEPS = 20  # 2 s
FUTURE_STEPS = 30  # 3 s
VECTOR_FEATURES = 8
LANE_POINTS = 20  # a lane centerline is cut into pieces of at most this many points (19 vectors)


class MotionDataError(ValueError):
    """A scene that cannot be turned into polylines, with a message saying what was found."""


# -- scene -> polylines -----------------------------------------------------------------------------------------
def agent_frame(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin (2,), rotation (2, 2)) of the frame centred on the last point, +x along the last ~0.5 s of motion."""
    origin = history[-1]
    motion = history[-1] - history[max(0, len(history) - 6)]
    angle = math.atan2(motion[1], motion[0]) if np.linalg.norm(motion) > 1e-3 else 0.0
    c, s = math.cos(angle), math.sin(angle)
    return origin, np.array([[c, -s], [s, c]])  # columns: the frame's x and y axes in city coordinates


def _vectors(points: np.ndarray, kind: int, max_vectors: int) -> np.ndarray:
    """(N, 2) points -> (min(N - 1, max_vectors), 8) vectors of consecutive points."""
    points = points[-(max_vectors + 1):]
    count = len(points) - 1
    features = np.zeros((count, VECTOR_FEATURES), np.float32)
    features[:, 0:2], features[:, 2:4] = points[:-1], points[1:]
    features[:, 4 + kind] = 1.0
    features[:, 7] = np.arange(count) / max(max_vectors - 1, 1)
    return features


def scene_to_features(agent_history, others=(), lanes=(), future=None, max_vectors=HISTORY_STEPS - 1) -> dict:
    """Agent history (H, 2), other agents' histories (each (N_i, 2)), lane centerlines (each (M_j, 2)) and the agent's
    future (T, 2) or None, all in city coordinates -> the polyline dict described in the module docstring."""
    agent_history = np.asarray(agent_history, np.float64)
    if agent_history.ndim != 2 or agent_history.shape[1] != 2 or len(agent_history) < 2:
        raise MotionDataError(
            f"The agent history has shape {agent_history.shape}; it needs at least 2 observed (x, y) points."
        )
    origin, rotation = agent_frame(agent_history)
    local = lambda points: (np.asarray(points, np.float64) - origin) @ rotation  # noqa: E731 - city -> agent frame
    pieces = [_vectors(local(agent_history), 0, max_vectors)]
    pieces += [_vectors(local(track), 1, max_vectors) for track in others if len(track) >= 2]
    for lane in lanes:
        lane = local(lane)
        for start in range(0, max(len(lane) - 1, 1), LANE_POINTS - 1):
            piece = lane[start:start + LANE_POINTS]
            if len(piece) >= 2:
                pieces.append(_vectors(piece, 2, max_vectors))
    polylines = np.zeros((len(pieces), max_vectors, VECTOR_FEATURES), np.float32)
    vector_mask = np.zeros((len(pieces), max_vectors), bool)
    for index, piece in enumerate(pieces):
        polylines[index, :len(piece)] = piece
        vector_mask[index, :len(piece)] = True
    features = {"polylines": polylines, "vector_mask": vector_mask, "origin": origin.astype(np.float32),
                "rotation": rotation.astype(np.float32),
                "history": local(agent_history).astype(np.float32)}
    if future is not None:
        features["labels"] = local(future).astype(np.float32)
    return features


def collate_motion(features: list[dict]) -> dict[str, torch.Tensor]:
    """Pad scenes to the batch's largest polyline count (padded polylines: vector_mask 0, polyline_mask 0)."""
    if not features:
        raise MotionDataError("Cannot collate an empty list of scenes.")
    count = max(len(f["polylines"]) for f in features)
    vectors = features[0]["polylines"].shape[1]
    batch = {
        "polylines": torch.zeros(len(features), count, vectors, VECTOR_FEATURES),
        "vector_mask": torch.zeros(len(features), count, vectors, dtype=torch.bool),
        "polyline_mask": torch.zeros(len(features), count, dtype=torch.bool),
    }
    for index, f in enumerate(features):
        batch["polylines"][index, :len(f["polylines"])] = torch.from_numpy(f["polylines"])
        batch["vector_mask"][index, :len(f["polylines"])] = torch.from_numpy(f["vector_mask"])
        batch["polyline_mask"][index, :len(f["polylines"])] = True
    if all("labels" in f for f in features):
        batch["labels"] = torch.stack([torch.from_numpy(f["labels"]) for f in features])
    return batch


def constant_velocity_forecast(history: np.ndarray, future_steps: int = FUTURE_STEPS, window: int = 5) -> np.ndarray:
    """The trivial baseline: continue the mean velocity of the last `window` steps. (H, 2) -> (future_steps, 2)."""
    window = min(window, len(history) - 1)
    velocity = (history[-1] - history[-1 - window]) / window
    return history[-1] + velocity * np.arange(1, future_steps + 1)[:, None]


# -- builtin: generated road scenes ---------------------------------------------------------------------------
def _polyline(points: list, spacing: float = 2.0) -> np.ndarray:
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
    """One builtin scene: an intersection, a target agent approaching or crossing it, 0-4 other agents."""
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
    # Random placement in the city: the model sees everything in the agent's frame anyway.
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    offset = rng.uniform(-500, 500, 2)
    place = lambda points: points @ rotation.T + offset  # noqa: E731
    return scene_to_features(
        place(trajectory[:HISTORY_STEPS]), [place(o) for o in others], [place(lane) for lane in lanes],
        future=place(trajectory[HISTORY_STEPS:]),
    )


def builtin_road_scenes(num_scenes: int, seed: int = 0) -> list[dict]:
    """`num_scenes` generated scenes (2 s history, 3 s future at 10 Hz), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [generated_road_scene(rng) for _ in range(num_scenes)]


# -- Argoverse 1 forecasting CSVs -------------------------------------------------------------------------------
def load_lane_centerlines(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Lane centerlines the user supplies: a JSON file {"CITY_NAME": [[[x, y], ...], ...], ...} (city coordinates,
    metres, one list of points per centerline, in driving direction), or a folder of `<CITY_NAME>.json` files each
    holding the list of centerlines of one city."""
    path = Path(path)
    if path.is_dir():
        cities = {file.stem: json.loads(file.read_text()) for file in sorted(path.glob("*.json"))}
    elif path.is_file():
        cities = json.loads(path.read_text())
    else:
        raise MotionDataError(f"Lane centerline file or folder {path} does not exist.")
    if not isinstance(cities, dict) or not cities:
        raise MotionDataError(f"{path}: expected a JSON object mapping city names to lists of centerlines.")
    result = {}
    for city, lanes in cities.items():
        arrays = [np.asarray(lane, np.float64) for lane in lanes]
        bad = [i for i, lane in enumerate(arrays) if lane.ndim != 2 or lane.shape[1] != 2 or len(lane) < 2]
        if bad:
            raise MotionDataError(f"{path}: city {city}: centerlines {bad[:5]} are not lists of >= 2 [x, y] points.")
        result[city] = arrays
    return result


def load_argoverse_csv(csv_path, lanes: dict[str, list[np.ndarray]] | None = None, lane_radius: float = 50.0) -> dict:
    """One Argoverse 1 forecasting sequence (columns TIMESTAMP, TRACK_ID, OBJECT_TYPE, X, Y, CITY_NAME; 10 Hz; the
    first 20 timestamps observed, the next 30 the future) -> the polyline dict. The AGENT track is the target; AV
    and OTHERS tracks observed in the first 2 s are the other agents; centerlines of the sequence's city with a
    point within `lane_radius` metres of the agent's last observed position are the lanes. A test-split file (20
    timestamps only) gives a dict without labels."""
    import pandas as pd

    table = pd.read_csv(csv_path)
    required = {"TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME"}
    if missing := required - set(table.columns):
        raise MotionDataError(f"{csv_path}: missing Argoverse columns {sorted(missing)}.")
    timestamps = np.sort(table["TIMESTAMP"].unique())
    if len(timestamps) < HISTORY_STEPS:
        raise MotionDataError(f"{csv_path}: {len(timestamps)} timestamps; a sequence needs >= {HISTORY_STEPS}.")
    observed = set(timestamps[:HISTORY_STEPS])
    agent = table[table["OBJECT_TYPE"] == "AGENT"].sort_values("TIMESTAMP")
    if agent.empty:
        raise MotionDataError(f"{csv_path}: no row has OBJECT_TYPE AGENT (the track to forecast).")
    agent_observed = agent[agent["TIMESTAMP"].isin(observed)][["X", "Y"]].to_numpy()
    if len(agent_observed) != HISTORY_STEPS:
        raise MotionDataError(f"{csv_path}: the AGENT is observed at {len(agent_observed)} of the first 20 timestamps.")
    future = None
    if len(timestamps) >= HISTORY_STEPS + FUTURE_STEPS:
        future = agent[agent["TIMESTAMP"].isin(set(timestamps[HISTORY_STEPS:HISTORY_STEPS + FUTURE_STEPS]))]
        future = future[["X", "Y"]].to_numpy()
        if len(future) != FUTURE_STEPS:
            raise MotionDataError(f"{csv_path}: the AGENT has {len(future)} of its 30 future points.")
    others = []
    rest = table[(table["OBJECT_TYPE"] != "AGENT") & table["TIMESTAMP"].isin(observed)]
    for _, track in rest.sort_values("TIMESTAMP").groupby("TRACK_ID", sort=True):
        others.append(track[["X", "Y"]].to_numpy())
    city_lanes = []
    if lanes is not None:
        city = str(table["CITY_NAME"].iloc[0])
        if city not in lanes:
            raise MotionDataError(f"{csv_path}: no lane centerlines for city {city!r} (have {sorted(lanes)}).")
        last = agent_observed[-1]
        city_lanes = [lane for lane in lanes[city] if np.linalg.norm(lane - last, axis=1).min() <= lane_radius]
    return scene_to_features(agent_observed, others, city_lanes, future=future)


def load_argoverse_folder(folder, lanes_path=None, lane_radius: float = 50.0) -> list[dict]:
    """Every `*.csv` sequence of an Argoverse 1 forecasting split folder, with the user's lane centerlines."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise MotionDataError(f"{folder}: no *.csv sequences found.")
    lanes = load_lane_centerlines(lanes_path) if lanes_path is not None else None
    return [load_argoverse_csv(file, lanes, lane_radius) for file in files]

"""Argoverse 1 motion-forecasting files as scenes: a sequence CSV (TIMESTAMP, TRACK_ID, OBJECT_TYPE, X, Y, CITY_NAME;
10 Hz) and the lane centerlines the user supplies ({"CITY": [[[x, y], ...], ...]}, city metres, driving direction).

Standalone on purpose (numpy and the standard library only): `hf_frozenlm.data.motion` reads Argoverse files through
it for train, evaluate and predict, and `push-space` copies it beside the Space's app, so the motion tab reads an
uploaded CSV exactly as `hf-frozenlm predict` does without hf_frozenlm installed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

HISTORY_STEPS = 20  # 2 s observed
FUTURE_STEPS = 30  # 3 s to forecast
LANE_RADIUS = 50.0  # metres: lanes with a point this close to the agent's last observed position are kept
COLUMNS = ("TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME")
NUMBER_COLUMNS = ("TIMESTAMP", "X", "Y")


class ArgoverseFormatError(ValueError):
    """A file that is not a usable Argoverse CSV or lane centerline file; the message says what was found and what to
    pass instead (hf_frozenlm shows it as a DataError, the Space as the tab's message)."""


def read_lane_centerlines(path, name: str | None = None) -> dict[str, list[np.ndarray]]:
    """{city: [(M, 2) centerline, ...]} from a JSON file {"CITY_NAME": [[[x, y], ...], ...], ...} or a folder of
    `<CITY_NAME>.json` files each holding one city's list of centerlines. `name` is how messages call the file."""
    path = Path(path)
    name = name or str(path)
    try:
        if path.is_dir():
            cities = {file.stem: json.loads(file.read_text(encoding="utf-8")) for file in sorted(path.glob("*.json"))}
        elif path.is_file():
            cities = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise ArgoverseFormatError(f"Lane centerline file or folder {name} does not exist.")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArgoverseFormatError(f"Cannot read lane centerlines from {name} ({error}).") from error
    if not isinstance(cities, dict) or not cities:
        raise ArgoverseFormatError(f"{name}: expected a JSON object mapping city names to lists of centerlines, e.g. "
                                   '{"PIT": [[[x, y], ...], ...]}, or a folder of <CITY>.json files.')
    result = {}
    for city, lanes in cities.items():
        if not isinstance(lanes, list):
            raise ArgoverseFormatError(f"{name}: city {city}: expected a list of centerlines; got "
                                       f"{type(lanes).__name__}.")
        arrays = []
        for lane in lanes:
            try:
                arrays.append(np.asarray(lane, np.float64))
            except (TypeError, ValueError):  # ragged lists, strings where numbers belong
                arrays.append(np.zeros(0))
        bad = [i for i, lane in enumerate(arrays) if lane.ndim != 2 or lane.shape[1] != 2 or len(lane) < 2
               or not np.isfinite(lane).all()]
        if bad:
            raise ArgoverseFormatError(f"{name}: city {city}: centerlines {bad[:5]} are not lists of >= 2 finite "
                                       "[x, y] points.")
        result[city] = arrays
    return result


def lanes_near(centerlines: list[np.ndarray], point, radius: float = LANE_RADIUS) -> list[np.ndarray]:
    """The centerlines with at least one point within `radius` metres of `point` (a city map is far larger than what
    matters to one agent's next 3 s)."""
    return [lane for lane in centerlines if np.linalg.norm(lane - point, axis=1).min() <= radius]


def read_argoverse_csv(path, lanes: dict[str, list[np.ndarray]] | None = None, lane_radius: float = LANE_RADIUS,
                       name: str | None = None) -> dict:
    """One Argoverse 1 forecasting sequence -> a scene of numpy arrays in city metres: the AGENT's first 20 timestamps
    are `agent`, its next 30 the `future` (None in a test-split file of 20 timestamps); AV and OTHERS tracks seen in
    those 2 s are `others` (by TRACK_ID); the sequence city's centerlines from `lanes` near the agent's last observed
    position are `lanes` (none without `lanes`). `name` is how messages call the file (default: its path)."""
    name = name or str(path)
    rows = _read_rows(path, name)
    timestamps = sorted({row["TIMESTAMP"] for row in rows})
    if len(timestamps) < HISTORY_STEPS:
        raise ArgoverseFormatError(f"{name}: {len(timestamps)} timestamps; a sequence needs >= {HISTORY_STEPS} "
                                   "(2 s observed).")
    observed = set(timestamps[:HISTORY_STEPS])
    by_time = sorted(rows, key=lambda row: row["TIMESTAMP"])  # stable: a track's rows keep their file order
    agent_rows = [row for row in by_time if row["OBJECT_TYPE"] == "AGENT"]
    if not agent_rows:
        raise ArgoverseFormatError(f"{name}: no row has OBJECT_TYPE AGENT (the track to forecast).")
    agent = _points(row for row in agent_rows if row["TIMESTAMP"] in observed)
    if len(agent) != HISTORY_STEPS:
        raise ArgoverseFormatError(f"{name}: the AGENT is observed at {len(agent)} of the first {HISTORY_STEPS} "
                                   "timestamps.")
    future = None
    if len(timestamps) >= HISTORY_STEPS + FUTURE_STEPS:
        later = set(timestamps[HISTORY_STEPS:HISTORY_STEPS + FUTURE_STEPS])
        future = _points(row for row in agent_rows if row["TIMESTAMP"] in later)
        if len(future) != FUTURE_STEPS:
            raise ArgoverseFormatError(f"{name}: the AGENT has {len(future)} of its {FUTURE_STEPS} future points.")
    tracks: dict[str, list[dict]] = {}
    for row in by_time:
        if row["OBJECT_TYPE"] != "AGENT" and row["TIMESTAMP"] in observed:
            tracks.setdefault(row["TRACK_ID"], []).append(row)
    others = [_points(tracks[track_id]) for track_id in sorted(tracks, key=_track_order(tracks))]
    city_lanes = []
    if lanes is not None:
        city = rows[0]["CITY_NAME"]
        if city not in lanes:
            raise ArgoverseFormatError(f"{name}: no lane centerlines for city {city!r} (the lanes file has "
                                       f"{sorted(lanes)}).")
        city_lanes = lanes_near(lanes[city], agent[-1], lane_radius)
    return {"scene_id": Path(path).stem, "agent": agent, "others": others, "lanes": city_lanes, "future": future}


def _read_rows(path, name: str) -> list[dict]:
    """The CSV's rows as dicts, TIMESTAMP, X and Y as floats; ArgoverseFormatError on an unreadable file, missing
    columns or a value that is not a finite number."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = sorted(set(COLUMNS) - set(reader.fieldnames or ()))
            if missing:
                raise ArgoverseFormatError(f"{name}: missing Argoverse columns {missing} (a forecasting CSV has "
                                           f"{', '.join(COLUMNS)}).")
            rows = []
            for row in reader:
                for column in NUMBER_COLUMNS:
                    row[column] = _number(row[column], column, reader.line_num, name)
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ArgoverseFormatError(f"Cannot read {name} as an Argoverse CSV ({error}).") from error
    if not rows:
        raise ArgoverseFormatError(f"{name}: the CSV has a header but no rows.")
    return rows


def _number(text, column: str, line: int, name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):  # None: a short row
        value = float("nan")
    if not np.isfinite(value):
        shown = "missing" if text is None else repr(text)
        raise ArgoverseFormatError(f"{name}: line {line}: {column} is {shown}; Argoverse CSVs hold finite numbers "
                                   "there (seconds for TIMESTAMP, city metres for X and Y).")
    return value


def _points(rows) -> np.ndarray:
    return np.array([[row["X"], row["Y"]] for row in rows], np.float64).reshape(-1, 2)


def _track_order(tracks):
    """Track ids in numeric order when all are numbers, else as text (the order pandas' groupby gives)."""
    try:
        numbers = {track_id: float(track_id) for track_id in tracks}
    except ValueError:
        return str
    return numbers.__getitem__

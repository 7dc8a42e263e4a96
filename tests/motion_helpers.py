"""Argoverse 1 forecasting files for the motion tests (tests/test_motion.py, the Space's tab in
tests/test_demo_tasks.py): a small sequence CSV and a lane centerline file for it."""

from __future__ import annotations

import json


def write_argoverse_csv(path, future=True):
    """A PIT sequence: the AGENT drives +x at 10 m/s for 5 s (2 s: a test-split file without the future), the AV
    beside it and one OTHERS track seen every second step, in the first 2 s."""
    rows = ["TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME"]
    for step in range(50 if future else 20):
        time = 315970000.0 + step / 10
        rows.append(f"{time},agent-1,AGENT,{100 + step * 1.0},{200.0},PIT")
        if step < 20:
            rows.append(f"{time},av-0,AV,{100 + step * 0.5},{204.0},PIT")
        if step % 2 == 0 and step < 20:
            rows.append(f"{time},other-2,OTHERS,{90.0},{190 + step * 0.2},PIT")
    path.write_text("\n".join(rows) + "\n")
    return path


def write_lanes(path):
    """Centerlines for PIT (one along the agent's path, one 5 km away) and MIA."""
    path.write_text(json.dumps({
        "PIT": [[[80.0 + i, 200.0] for i in range(60)], [[5000.0, 0.0], [5001.0, 0.0]]],  # one near, one far
        "MIA": [[[0.0, 0.0], [1.0, 0.0]]],
    }))
    return path

"""A motion-forecasting scene and its forecasts as a picture: lanes, other agents, the observed track, the forecasts
drawn wider and more opaque the more probable, and the true future when known.

Standalone on purpose (numpy and matplotlib only): `push-space` copies it beside the Space's app, which draws the
same picture as `hf-frozenlm predict --output_dir` without hf_frozenlm installed.
"""

from __future__ import annotations

import numpy as np


def scene_figure(scene: dict, result: dict):
    """One scene and its forecasts as a matplotlib Figure (no display), zoomed on the agent and the forecasts.
    `result`: {"input": title, "forecasts": [{"trajectory", "probability"}, ...] most probable first, and optionally
    "future_metrics": {"minADE", "minFDE"}}. A bare Figure (no pyplot): nothing to close, safe in threads."""
    from matplotlib.figure import Figure

    agent = np.asarray(scene["agent"], np.float64)
    forecasts = result["forecasts"]
    fig = Figure(figsize=(7, 7))
    axis = fig.add_subplot()
    for index, lane in enumerate(scene.get("lanes") or []):
        lane = np.asarray(lane, np.float64)
        axis.plot(lane[:, 0], lane[:, 1], color="0.75", linewidth=1, zorder=1, label="lanes" if index == 0 else None)
    for index, track in enumerate(scene.get("others") or []):
        track = np.asarray(track, np.float64)
        if len(track):
            axis.plot(track[:, 0], track[:, 1], color="tab:blue", linewidth=1.5, alpha=0.7, zorder=2,
                      label="other agents" if index == 0 else None)
            axis.plot(*track[-1], "o", color="tab:blue", markersize=3, zorder=2)
    axis.plot(agent[:, 0], agent[:, 1], color="black", linewidth=2.5, zorder=4, label="observed")
    axis.plot(*agent[-1], "o", color="black", markersize=5, zorder=4)
    top = max((forecast["probability"] for forecast in forecasts), default=1.0) or 1.0
    for rank, forecast in enumerate(forecasts):
        trajectory = np.asarray(forecast["trajectory"], np.float64)
        share = forecast["probability"] / top
        axis.plot(trajectory[:, 0], trajectory[:, 1], color="tab:orange", linewidth=0.8 + 3.2 * share,
                  alpha=0.25 + 0.75 * share, zorder=3,
                  label=f"forecasts (p {forecasts[0]['probability']:.2f} ... {forecasts[-1]['probability']:.2f})"
                  if rank == 0 else None)
    points = [agent] + [np.asarray(forecast["trajectory"], np.float64) for forecast in forecasts]
    if scene.get("future") is not None:
        future = np.asarray(scene["future"], np.float64)
        axis.plot(future[:, 0], future[:, 1], "--", color="tab:green", linewidth=2, zorder=5, label="true future")
        points.append(future)
    stacked = np.concatenate(points)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    centre, half = (low + high) / 2, max((high - low).max() / 2, 10.0) + 10.0
    axis.set_xlim(centre[0] - half, centre[0] + half)
    axis.set_ylim(centre[1] - half, centre[1] + half)
    axis.set_aspect("equal")
    axis.set_xlabel("x (m)")
    axis.set_ylabel("y (m)")
    title = str(result["input"])
    if "future_metrics" in result:
        metrics = result["future_metrics"]
        title += f"\nminADE {metrics['minADE']:.2f} m, minFDE {metrics['minFDE']:.2f} m"
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_scene(scene: dict, result: dict, path: str) -> None:
    """One scene and its forecasts as a PNG at `path` (see `scene_figure`)."""
    scene_figure(scene, result).savefig(path, dpi=100)

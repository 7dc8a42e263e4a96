"""The point-cloud tabs: classification (a cloud -> top-5 labels) and 3D question answering (a scene and a question
-> the top answers). Both show an interactive 3D view (plotly) of the points the model read, each coloured by the
token map (magnitude after the frozen block) of its point group, beside the answer.

Files: .npy/.npz (arrays; a scene .npz holds `points` and `colors`), .txt/.xyz (rows of numbers), .ply/.off (read
with trimesh; a mesh is sampled on its surface). Clouds beyond MAX_POINTS are refused before they are parsed where
the format says its size up front (.npy headers, .ply/.off headers read by trimesh), and after at most that many
rows of text.
"""

from __future__ import annotations

import os

import gradio as gr
import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoProcessor

if __package__:
    from .demo_common import InputProblem, check_text, elapsed_ms, example_files, example_options, guarded, load_model
    from .demo_common import model_header, run_with_maps, top_scores
else:  # on the Space, beside app.py
    from demo_common import InputProblem, check_text, elapsed_ms, example_files, example_options, guarded, load_model
    from demo_common import model_header, run_with_maps, top_scores

TASKS = ("point-cloud-classification", "3d-question-answering")
POINT_EXTENSIONS = (".npy", ".npz", ".ply", ".off", ".txt", ".xyz")
MAX_POINTS = 2_000_000  # 24 MB of float32 xyz; a cloud is parsed at most once at this size
MESH_SAMPLES = 2048  # surface samples of a mesh (.off / .ply with faces)
MAX_QUESTION_CHARS = 200
LIMITS = {"point cloud": f"{MAX_POINTS:,} points", "question": f"{MAX_QUESTION_CHARS} characters"}


def too_many(count) -> InputProblem:
    return InputProblem(f"That cloud has {count:,} points; the demo takes up to {MAX_POINTS:,}. Please subsample it.")


def read_cloud(path: str | None) -> np.ndarray:
    """A point-cloud file -> (N, 3 + F) float32 (xyz first, then e.g. colours); InputProblem if unusable."""
    if not path:
        raise InputProblem("No point cloud yet: upload a file or pick an example.")
    extension = os.path.splitext(str(path))[1].lower()
    if extension not in POINT_EXTENSIONS:
        raise InputProblem(f"{os.path.basename(str(path))!r}: the demo reads {', '.join(POINT_EXTENSIONS)} files.")
    try:
        if extension == ".npy":
            header = np.load(path, mmap_mode="r", allow_pickle=False)  # the shape, without reading the data
            if header.ndim >= 1 and header.shape[0] > MAX_POINTS:
                raise too_many(header.shape[0])
            cloud = np.array(header, dtype=np.float32)
        elif extension == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                key = next((k for k in ("points", "xyz", "data", "pos") if k in archive.files), archive.files[0])
                cloud = archive[key]
                if len(cloud) > MAX_POINTS:
                    raise too_many(len(cloud))
                colours = next((archive[k] for k in ("colors", "colours", "rgb") if k in archive.files), None)
                if colours is not None and len(colours) == len(cloud):
                    cloud = np.concatenate([np.asarray(cloud)[:, :3], colours], axis=1)
        elif extension in (".txt", ".xyz"):
            delimiter = "," if _has_commas(path) else None
            text = np.loadtxt(path, delimiter=delimiter, ndmin=2, max_rows=MAX_POINTS + 1, dtype=np.float32)
            if len(text) > MAX_POINTS:
                raise too_many(f"more than {MAX_POINTS:,}")
            cloud = text
        else:
            cloud = _read_mesh_or_cloud(path, extension)
    except InputProblem:
        raise
    except Exception:  # numpy, zipfile and trimesh raise many kinds on a malformed file
        raise InputProblem(f"{os.path.basename(str(path))!r} is not a point cloud this demo can read: "
                           f"expected {', '.join(POINT_EXTENSIONS)} with xyz in the first three columns.") from None
    cloud = np.asarray(cloud, dtype=np.float32)
    if cloud.ndim != 2 or cloud.shape[1] < 3 or len(cloud) == 0:
        raise InputProblem(f"That file holds an array of shape {cloud.shape}; expected (points, 3 or more), xyz first.")
    if not np.isfinite(cloud[:, :3]).all():
        raise InputProblem("That cloud holds NaN or infinite coordinates; drop or repair those points.")
    return cloud


def _has_commas(path: str) -> bool:
    with open(path, encoding="ascii", errors="replace") as handle:
        return "," in handle.readline()


def _read_mesh_or_cloud(path: str, extension: str) -> np.ndarray:
    """.ply / .off through trimesh: a mesh's surface samples (seeded), or the vertices of a bare cloud."""
    import trimesh

    loaded = trimesh.load(path, file_type=extension[1:], process=False)
    vertices = getattr(loaded, "vertices", None)
    if vertices is None or len(vertices) > MAX_POINTS:
        raise too_many(len(vertices)) if vertices is not None else InputProblem("That file holds no vertices.")
    faces = getattr(loaded, "faces", None)
    if faces is not None and len(faces):
        points, _ = trimesh.sample.sample_surface(loaded, MESH_SAMPLES, seed=0)
        return np.asarray(points)
    return np.asarray(vertices)


def group_of_points(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(P, 3) points, (G, 3) group centres -> (P,) index of each point's nearest centre (Point-BERT's grouping)."""
    return torch.cdist(points.float(), centers.float()).argmin(dim=-1)


def cloud_figure(points: np.ndarray, values: np.ndarray, title: str):
    """An interactive 3D scatter of the points, coloured by each point's map value (blue low, red high)."""
    import plotly.graph_objects as go

    figure = go.Figure(go.Scatter3d(
        x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers",
        marker=dict(size=3, color=values, colorscale="Jet", cmin=0, cmax=1, colorbar=dict(title="map", thickness=12)),
    ))
    figure.update_layout(title=dict(text=title, font=dict(size=13)), margin=dict(l=0, r=0, t=30, b=0), height=380,
                         scene=dict(aspectmode="data"))
    return figure


class Tab:
    """A point-cloud tab for one model: classification, or 3D question answering with a question box."""

    def __init__(self, model_id: str, task: str):
        self.model_id, self.task = model_id, task
        self.asks = task == "3d-question-answering"
        self.title = "3D question answering" if self.asks else "Point clouds"
        self.model = load_model(model_id, AutoModel)  # these tasks' AutoModel is the task model
        if self.asks:
            self.processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
        else:
            self.processor = AutoFeatureExtractor.from_pretrained(model_id, trust_remote_code=True)

    def answer(self, path, question=None):
        """(top-5 {label or answer: probability}, plotly figure) for one cloud (and question)."""
        cloud = read_cloud(path)
        if self.asks:
            question = check_text(question, "question", MAX_QUESTION_CHARS)
            inputs = dict(self.processor(cloud, [question], return_tensors="pt"))
        else:
            inputs = dict(self.processor(cloud, return_tensors="pt"))
        outputs, maps, layout = run_with_maps(self.model, inputs, kinds=("magnitude",))
        labels = top_scores(outputs.logits[0].softmax(-1), self.model.config.id2label)
        stage = "block" if "block" in maps["magnitude"] else "trunk"
        points = inputs["point_values"][0]
        groups = group_of_points(points, layout.positions[0])
        values = maps["magnitude"][stage][0][groups].numpy()
        where = "after the frozen block" if stage == "block" else "at the trunk's output"
        return labels, cloud_figure(points.numpy(), values, f"Magnitude of each point's group {where}")

    def run(self, *values):
        *inputs, started = values
        labels, figure = self.answer(*inputs)
        best = next(iter(labels))
        what = "Answer" if self.asks else "Predicted"
        return labels, figure, f"{what} **{best}** ({labels[best]:.0%}) in {elapsed_ms(started)}, reading included."

    def build(self, api_name: str) -> None:
        gr.Markdown(model_header(self.model_id, self.model))
        with gr.Row():
            with gr.Column(scale=1):
                cloud = gr.File(label="Scene point cloud" if self.asks else "Point cloud",
                                file_types=list(POINT_EXTENSIONS), type="filepath", height=120)
                inputs = [cloud]
                if self.asks:
                    inputs.append(gr.Textbox(label="Question", max_length=MAX_QUESTION_CHARS, lines=1,
                                             placeholder="how many cubes are there?"))
                button = gr.Button("Answer" if self.asks else "Classify cloud", variant="primary",
                                   elem_id=f"{api_name}-run")
                examples = self.examples()
                if examples:
                    gr.Examples(examples, inputs=inputs if self.asks else cloud, label="Examples (builtin)",
                                elem_id=f"{api_name}-examples")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload a cloud or pick an example.", elem_id=f"{api_name}-status")
                labels = gr.Label(num_top_classes=5, label="Top 5 answers" if self.asks else "Top 5")
                view = gr.Plot(label="3D view: points coloured by their group's token map")
        button.click(guarded(self.run, "answering" if self.asks else "classifying this cloud"), inputs,
                     [labels, view, status], api_name=api_name, concurrency_limit=1, concurrency_id="model")

    def examples(self) -> list:
        files = example_files(self.task, "*.np[yz]")
        if not self.asks:
            return files
        questions = example_options(self.task).get("question") or []
        return [[path, questions[index % len(questions)]] for index, path in enumerate(files)] if questions else []

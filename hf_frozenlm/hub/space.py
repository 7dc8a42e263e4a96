"""The Gradio Space in spaces/: where its files are, its examples, and the folder a Space upload holds.

spaces/ ships inside the package as `hf_frozenlm.spaces`, so `hf-frozenlm demo` runs the very app the Space
runs. On the Space, hf_frozenlm is not installed: `assemble_space` adds the package modules the app needs
(`frozenlm_maps.py`, torch only; `frozenlm_motion_plot.py`, matplotlib only; `frozenlm_argoverse.py`, numpy only)
beside app.py and its tab modules.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# The files of spaces/ that make up the Space (the __init__.py that makes it a subpackage stays behind).
SPACE_FILES = ("README.md", "app.py", "requirements.txt", "demo_common.py", "demo_image.py", "demo_video.py",
               "demo_points.py", "demo_motion.py", "demo_vilt.py")
# The modules the app imports from the package (paths in it), copied beside app.py (each imports only pip packages).
VENDORED_MODULES = ("analysis/frozenlm_maps.py", "analysis/frozenlm_motion_plot.py", "data/frozenlm_argoverse.py")
EXAMPLE_SUFFIXES = (".png", ".webm", ".npy", ".npz", ".json")
EXAMPLE_DIGITS = (0, 2, 3, 5, 7, 9)


def space_dir() -> Path:
    """The spaces/ folder (a checkout's, or the installed `hf_frozenlm.spaces`)."""
    from .. import spaces

    return Path(spaces.__file__).resolve().parent


def assemble_space(out_dir, model_id: str | None = None, model_ids: list[str] | None = None) -> list[Path]:
    """Write the folder a Space upload holds into `out_dir`; returns the files written.

    With `model_id` (or several `model_ids`), the README's `models:` lists them: app.py reads the models from there
    when the Space has no MODEL_ID variable, so the upload alone decides which models (tabs) the Space shows.
    """
    model_ids = list(model_ids or []) + ([model_id] if model_id is not None else [])
    source, out_dir = space_dir(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SPACE_FILES:
        shutil.copyfile(source / name, out_dir / name)
        written.append(out_dir / name)
    for module in VENDORED_MODULES:
        target = out_dir / Path(module).name
        shutil.copyfile(PACKAGE_DIR / module, target)
        written.append(target)
    for example in sorted((source / "examples").rglob("*")):
        if example.is_file() and example.suffix in EXAMPLE_SUFFIXES:  # the image digits and each task's folder
            target = out_dir / example.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(example, target)
            written.append(target)
    if model_ids:
        readme = out_dir / "README.md"
        listed = "".join(f"  - {one}\n" for one in model_ids)
        text, count = re.subn(r"(?m)^models:\n(?:  - .*\n)+", lambda _: f"models:\n{listed}", readme.read_text("utf-8"))
        if count != 1:
            raise ValueError(f"{source / 'README.md'} has no `models:` list in its front matter to name {model_ids}.")
        readme.write_text(text, encoding="utf-8")
    return written


def write_digit_examples(out_dir, digits=EXAMPLE_DIGITS, scale: int = 8) -> list[Path]:
    """Save one scikit-learn digit per class in `digits` as a PNG, rendered as training sees them.

    Dark ink on white (the training data's inversion), 8x8 scans enlarged `scale` times with sharp pixels so
    they stay legible as thumbnails. Takes the last sample of each class in the set (it may be one the
    model trained on: these are illustrations, not an evaluation).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for digit in digits:
        index = int(np.flatnonzero(data.target == digit)[-1])
        pixels = (255 - np.round(data.images[index] * (255 / 16))).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
        path = out_dir / f"digit_{digit}.png"
        image.save(path, optimize=True)
        written.append(path)
    return written


# Tasks whose tab shows examples from its builtin, in the order of the tabs (image classification has the digits).
EXAMPLE_TASKS = ("video-classification", "point-cloud-classification", "motion-forecasting",
                 "visual-question-answering", "image-text-retrieval", "3d-question-answering")
EXAMPLE_COUNT = 2


def write_task_examples(out_dir, tasks=EXAMPLE_TASKS, count: int = EXAMPLE_COUNT) -> list[Path]:
    """Write each task's first `count` builtin test examples into `out_dir/<task>/` through the task contract's
    example writer (the files `hf-frozenlm predict` reads), and the predict options they need (questions,
    candidate texts) as `options.json` beside them. Returns the files written."""
    import json

    from ..tasks import get_task
    from ..training.arguments import DataArguments

    written = []
    for name in tasks:
        task = get_task(name)
        folder = Path(out_dir) / name
        if folder.exists():
            shutil.rmtree(folder)
        paths, options = task.write_examples(task.load_data(DataArguments()), str(folder), count=count)
        paths = [as_webm(path) if path.endswith(".mp4") else path for path in paths]
        (folder / "options.json").write_text(json.dumps(example_options_dict(options), indent=1) + "\n", "utf-8")
        written += [Path(path) for path in paths] + [folder / "options.json"]
    return written


def as_webm(path: str) -> str:
    """Re-encode an example clip as lossless VP9 in WebM (beside it, replacing it): browsers do not play the MPEG-4
    Part 2 video the task's writer produces, so the Space's video box would stay blank with an error."""
    import av

    target = str(Path(path).with_suffix(".webm"))
    with av.open(path) as source, av.open(target, mode="w") as output:
        decoded = source.streams.video[0]
        stream = output.add_stream("libvpx-vp9", rate=decoded.average_rate or 8)
        stream.width, stream.height, stream.pix_fmt = decoded.width, decoded.height, "yuv420p"
        stream.options = {"lossless": "1"}
        for frame in source.decode(video=0):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    Path(path).unlink()
    return target


def example_options_dict(options: list[str]) -> dict[str, list[str]]:
    """["--question", "a", "b", "--texts", "x"] -> {"question": ["a", "b"], "texts": ["x"]}."""
    result: dict[str, list[str]] = {}
    key = None
    for item in options:
        if item.startswith("--"):
            key = item[2:]
            result[key] = []
        elif key is not None:
            result[key].append(item)
    return result

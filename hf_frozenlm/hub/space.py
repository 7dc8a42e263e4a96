"""The Gradio Space in spaces/: where its files are, its example images, and the folder a Space upload holds.

spaces/ ships inside the package as `hf_frozenlm.spaces`, so `hf-frozenlm demo` runs the very app the Space
runs. On the Space, hf_frozenlm is not installed: `assemble_space` adds the one package module the app needs
(`frozenlm_maps.py`, which imports only torch) beside app.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

# The modules the app imports from the package, copied beside app.py (each imports only pip packages).
ANALYSIS_DIR = Path(__file__).resolve().parent.parent / "analysis"
# The files of spaces/ that make up the Space (the __init__.py that makes it a subpackage stays behind).
SPACE_FILES = ("README.md", "app.py", "requirements.txt")
VENDORED_MODULES = ("frozenlm_maps.py",)
EXAMPLE_DIGITS = (0, 2, 3, 5, 7, 9)


def space_dir() -> Path:
    """The spaces/ folder (a checkout's, or the installed `hf_frozenlm.spaces`)."""
    from .. import spaces

    return Path(spaces.__file__).resolve().parent


def assemble_space(out_dir, model_id: str | None = None) -> list[Path]:
    """Write the folder a Space upload holds into `out_dir`; returns the files written.

    With `model_id`, the README's `models:` names it: app.py reads the model from there when the Space has
    no MODEL_ID variable, so the upload alone decides which model the Space shows.
    """
    source, out_dir = space_dir(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SPACE_FILES:
        shutil.copyfile(source / name, out_dir / name)
        written.append(out_dir / name)
    for name in VENDORED_MODULES:
        shutil.copyfile(ANALYSIS_DIR / name, out_dir / name)
        written.append(out_dir / name)
    (out_dir / "examples").mkdir(exist_ok=True)
    for example in sorted((source / "examples").glob("*.png")):
        shutil.copyfile(example, out_dir / "examples" / example.name)
        written.append(out_dir / "examples" / example.name)
    if model_id is not None:
        readme = out_dir / "README.md"
        text, count = re.subn(r"(?m)^models:\n(?:  - .*\n)+", f"models:\n  - {model_id}\n", readme.read_text("utf-8"))
        if count != 1:
            raise ValueError(f"{source / 'README.md'} has no `models:` list in its front matter to name {model_id}.")
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

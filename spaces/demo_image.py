"""The image-classification tab: upload, sketch or pick a digit; the top-5 labels, the token activation maps (paper
section 4) at the trunk's output and after the frozen block, and optionally a baseline model beside it.

Each image is classified once, and the same forward pass yields the magnitude and frequency maps.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from transformers import AutoImageProcessor, AutoModelForImageClassification

if __package__:
    from .demo_common import EXAMPLES_DIR, InputProblem, describe_llm_layers, overlay, guarded, logger
    from .demo_common import frozen_block_variant, run_with_maps
else:  # on the Space, beside app.py
    from demo_common import EXAMPLES_DIR, InputProblem, describe_llm_layers, overlay, guarded, logger
    from demo_common import frozen_block_variant, run_with_maps

TASKS = ("image-classification",)

# Above this the decoded image alone would take gigabytes; PIL's own bomb check comes later (at 179 Mpx).
MAX_INPUT_PIXELS = 64_000_000
# Images are shrunk to this side before anything else: the models read 16-224 px, and resizing a huge
# array in the processor would cost far more than the model.
WORKING_SIDE = 512
OVERLAY_SIDE = 192  # heatmap tiles, in pixels
INK_THRESHOLD = 245  # a sketch pixel darker than this (0-255, on white) counts as ink
SKETCH_SIDE = 64  # a framed sketch's side in pixels, as the example digits
STROKE_WIDENING = 7  # window of the minimum filter that widens sketch strokes at SKETCH_SIDE
STAGE_TITLES = {"trunk": "trunk output", "block": "after block"}  # short: gallery captions are one line


def check_pixel_count(width: int, height: int, what: str = "That image") -> None:
    """The one size limit of every input path (uploads, sketches, examples), checked on the header, before decoding."""
    if width * height > MAX_INPUT_PIXELS:
        raise InputProblem(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} megapixels); the demo takes up to "
            f"{MAX_INPUT_PIXELS / 1e6:.0f}. Please downscale it first."
        )


def image_header_size(source) -> tuple[int, int]:
    """(width, height) from an image file's header (a path or bytes), without decoding the pixels."""
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.size


LIMITS = {"image": f"{MAX_INPUT_PIXELS // 1_000_000} megapixels (uploads, drawings, examples)"}

# -- inputs -> one RGB image ---------------------------------------------------------------------------------
def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is laid on white paper (sketches and digits are dark ink on white)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # High-bit-depth greyscale: stretch its own range to 0-255 (a plain convert("L") clips it).
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(((array - low) * scale).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return image.convert("RGB")


def open_upload(path: str | None) -> Image.Image:
    """An uploaded file -> an RGB image at most WORKING_SIDE px on its longer side; InputProblem if unusable."""
    if path is None:
        raise InputProblem("No image yet: upload one, pick an example, or draw in the Draw tab.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below is tighter
            with Image.open(path) as image:
                check_pixel_count(*image.size)
                # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: a huge photo never exists at full size.
                image.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
                upright = ImageOps.exif_transpose(image)
                upright.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
                return to_rgb_on_white(upright)  # a new image: the file can close
    except InputProblem:
        raise
    except Image.DecompressionBombError:
        raise InputProblem("That image is too large to decode safely. Please downscale it first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputProblem(
            f"{Path(path).name!r} is not an image this demo can read. Please upload a PNG, JPEG, WebP, GIF or BMP."
        ) from None


def sketch_to_image(value) -> Image.Image:
    """A Sketchpad value -> a 64 px RGB image of the drawing, framed and inked like the digit scans.

    The default model learned from scans whose digit fills most of the box, with strokes about a sixth of
    the box wide. A digit drawn small in a corner, or with a pen stroke that is thin next to the drawing,
    would reach it as a few light-grey pixels (a drawn 1 and 7 were read as 2). So the drawing is cropped,
    centred in a square with a margin, and its strokes widened; that made every test sketch read correctly.
    """
    if isinstance(value, dict) and value.get("refused"):
        raise InputProblem(value["refused"])
    composite = value.get("composite") if isinstance(value, dict) else value
    if composite is None:
        raise InputProblem("The sketch is empty: draw a digit first.")
    if isinstance(composite, (str, Path)):  # type="filepath" callers
        check_pixel_count(*image_header_size(composite), what="That drawing")
        with Image.open(composite) as opened:
            composite = np.asarray(opened)
    check_pixel_count(np.asarray(composite).shape[1], np.asarray(composite).shape[0], what="That drawing")
    image = to_rgb_on_white(Image.fromarray(np.asarray(composite).astype(np.uint8)))
    grey = np.asarray(image.convert("L"))
    rows, cols = np.nonzero(grey < INK_THRESHOLD)
    if rows.size == 0:
        raise InputProblem("The sketch is empty: draw a digit first.")
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = int(max(bottom - top, right - left) * 1.25) + 2  # the scans keep about a tenth of margin per side
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image.crop((left, top, right, bottom)), ((side - (right - left)) // 2, (side - (bottom - top)) // 2))
    square = square.resize((SKETCH_SIDE, SKETCH_SIDE), Image.Resampling.BOX)
    return square.filter(ImageFilter.MinFilter(STROKE_WIDENING))  # the darkest pixel nearby: wider ink


# -- heatmap tiles -------------------------------------------------------------------------------------------
# -- models ----------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model, its image processor and how to describe it."""

    model_id: str
    model: torch.nn.Module
    processor: object
    description: str

    @classmethod
    def load(cls, model_id: str) -> "LoadedModel":
        model = AutoModelForImageClassification.from_pretrained(model_id, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(model_id)
        return cls(model_id, model, processor, describe_llm_layers(model.config))

    def classify(self, image: Image.Image) -> tuple[dict[str, float], list[tuple[Image.Image, str]]]:
        """Top-5 {label: probability} and the heatmap tiles (image, caption) for one RGB image."""
        pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"]
        outputs, maps, _ = run_with_maps(self.model, {"pixel_values": pixel_values})
        logits = outputs.logits
        probabilities = logits[0].float().softmax(-1)
        top = probabilities.topk(min(5, probabilities.numel()))
        id2label = self.model.config.id2label
        labels = {str(id2label.get(int(i), int(i))): float(p) for p, i in zip(top.values, top.indices)}
        tiles = [
            (overlay(image, stages[stage][0].numpy(), OVERLAY_SIDE), f"{kind} · {STAGE_TITLES[stage]}")
            for stage in ("trunk", "block")
            for kind, stages in maps.items()
            if stage in stages
        ]
        return labels, tiles


def status_line(labels: dict[str, float], started: float, now: float) -> str:
    """The top label and how long the whole request took: reading and preparing the input, and the model calls."""
    best = next(iter(labels))
    return f"Predicted **{best}** ({labels[best]:.0%}) in {(now - started) * 1000:.0f} ms on CPU, input and maps included."


class Tab:
    """The image-classification tab for one model (and optionally a baseline shown beside it)."""

    title = "Image classification"

    def __init__(self, model_id: str, baseline_id: str | None = None):
        self.main = LoadedModel.load(model_id)
        self.baseline = LoadedModel.load(baseline_id) if baseline_id else None
        if frozen_block_variant(self.main.model) is None:
            logger.warning("%s has no frozen block: only trunk maps will show.", model_id)

    def header(self) -> str:
        main, baseline = self.main, self.baseline
        return (f"**Model:** `{main.model_id}`. {main.description}"
                + (f"\n\n**Baseline:** `{baseline.model_id}`. {baseline.description}" if baseline else ""))

    def run(self, image: Image.Image, started: float):
        labels, tiles = self.main.classify(image)
        base_labels, base_tiles = self.baseline.classify(image) if self.baseline else (None, None)
        return labels, tiles, status_line(labels, started, time.perf_counter()), base_labels, base_tiles

    def build(self, api_name: str = "predict") -> None:
        """The tab's components and events (inside the caller's gr.Tab); events named api_name, api_name_sketch."""
        baseline = self.baseline
        gr.Markdown(self.header())
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Upload"):
                    upload = pass_unreadable_uploads_on(gr.Image(
                        type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image", height=280))
                    upload_button = gr.Button("Classify", variant="primary", elem_id="classify")
                    examples = sorted(str(path) for path in EXAMPLES_DIR.glob("*.png"))
                    if examples:
                        gr.Examples(examples, inputs=upload, label="Examples (handwritten digits)", elem_id="examples")
                with gr.Tab("Draw"):
                    sketch = refuse_oversized_sketches(gr.Sketchpad(
                        type="numpy", image_mode="RGBA", label="Draw a digit (dark ink on white)", height=280,
                        brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"),
                    ))
                    sketch_button = gr.Button("Classify drawing", variant="primary")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload an image, pick an example or draw a digit.", label="status",
                                     elem_id="status")
                with gr.Row():
                    with gr.Column():
                        labels = gr.Label(num_top_classes=5, label="Top 5 (frozen-LLM model)")
                        # Four tiles in a row alone; two by two when the baseline shares the width.
                        tiles = gr.Gallery(label="Token activation maps", columns=2 if baseline else 4, height="auto",
                                           object_fit="contain", allow_preview=False)
                    with gr.Column(visible=baseline is not None):
                        base_labels = gr.Label(num_top_classes=5, label="Top 5 (baseline)")
                        base_tiles = gr.Gallery(label="Baseline maps", columns=2, height="auto",
                                                object_fit="contain", allow_preview=False)
        outputs = [labels, tiles, status, base_labels, base_tiles]
        # One shared concurrency slot: on a small CPU, two forward passes at once only slow each other down.
        upload_button.click(guarded(lambda path, started: self.run(open_upload(path), started),
                                    "classifying this image"),
                            upload, outputs, api_name=api_name, concurrency_limit=1, concurrency_id="model")
        sketch_button.click(guarded(lambda value, started: self.run(sketch_to_image(value), started),
                                    "classifying this drawing"),
                            sketch, outputs, api_name=f"{api_name}_sketch", concurrency_limit=1,
                            concurrency_id="model")


def pass_unreadable_uploads_on(image: gr.Image) -> gr.Image:
    """Make `image` hand unreadable uploads (not an image, a decompression bomb) to the handler as a path.

    gr.Image opens every upload with PIL before the event runs, so a text file would fail inside gradio with a
    generic error; passed on, `open_upload` says what is wrong. The instance's method is wrapped rather than
    gr.Image subclassed, because gradio writes a .pyi stub beside the source of every component subclass.
    """
    preprocess = image.preprocess

    def preprocess_or_pass_path(payload):
        try:
            with warnings.catch_warnings():
                # gradio only opens the file (lazily); open_upload applies the real size limit.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return preprocess(payload)
        except Exception:
            return payload.path if payload is not None else None

    image.preprocess = preprocess_or_pass_path
    return image


def refuse_oversized_sketches(sketchpad):
    """Make `sketchpad` check every image of a submission (background, layers, composite) against the pixel limit
    on its header, before gradio decodes them: a small PNG can hold a 13000 x 13000 canvas, gigabytes once decoded.
    An oversized one reaches the handler as {"refused": message}. (The instance's method is wrapped, as for uploads.)"""
    preprocess = sketchpad.preprocess

    def preprocess_within_limit(payload):
        if payload is not None:
            # Files uploaded with the request, or the bytes the browser streamed ahead (payload.id names them).
            stored = sketchpad.blob_storage.get(payload.id) if payload.id is not None else payload
            parts = [stored.background, stored.composite, *(stored.layers or [])] if stored is not None else []
            for part in (p for p in parts if p is not None):
                source = part if isinstance(part, bytes) else getattr(part, "path", None)
                if source is None:
                    continue
                try:
                    check_pixel_count(*image_header_size(source), what="That drawing")
                except InputProblem as problem:
                    return {"refused": str(problem)}
                except (OSError, SyntaxError, ValueError):
                    return {"refused": "The drawing could not be read as an image; please draw again."}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, tighter limit applies
            return preprocess(payload)

    sketchpad.preprocess = preprocess_within_limit
    return sketchpad

"""The video-classification tab: upload a clip or pick an example; the top-5 labels and the token maps per tubelet
over the frames (a strip: one tile per tubelet time step, at the trunk's output and after the frozen block).

Frames are decoded with PyAV one at a time and shrunk at once, so memory stays bounded by the frame limit whatever
the file's resolution; the model sees the middle frame of each of its equal segments, as `hf-frozenlm predict` does.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForVideoClassification

if __package__:
    from .demo_common import InputProblem, elapsed_ms, overlay, example_files, guarded, load_model, model_header
    from .demo_common import run_with_maps, top_scores
else:  # on the Space, beside app.py
    from demo_common import InputProblem, elapsed_ms, overlay, example_files, guarded, load_model, model_header
    from demo_common import run_with_maps, top_scores

TASKS = ("video-classification",)
MAX_VIDEO_FRAMES = 900  # 30 s at 30 fps: decoding stops here and the clip is refused
MAX_FRAME_PIXELS = 3840 * 2160  # one 4K frame, checked on the stream header before any decoding
WORKING_SIDE = 128  # each decoded frame is shrunk to this longer side (the models read 16-224 px)
TILE_SIDE = 128
LIMITS = {"video": f"{MAX_VIDEO_FRAMES} frames of at most {MAX_FRAME_PIXELS // 1_000_000} megapixels"}


def decode_frames(path: str | None) -> np.ndarray:
    """A video file -> (T, h, w, 3) uint8 frames, each at most WORKING_SIDE px; InputProblem if unusable or too long."""
    import av

    if not path:
        raise InputProblem("No video yet: upload a clip or pick an example.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputProblem("That file has no video stream. Please upload an MP4, WebM, AVI or MOV clip.")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > MAX_FRAME_PIXELS:
                raise InputProblem(f"That video is {width}x{height} per frame; the demo takes up to "
                                   f"{MAX_FRAME_PIXELS / 1e6:.1f} megapixels. Please downscale it first.")
            if stream.frames and stream.frames > MAX_VIDEO_FRAMES:
                raise too_long(stream.frames)
            scale = min(1.0, WORKING_SIDE / max(width, height, 1))
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            frames = []
            for frame in container.decode(video=0):
                if len(frames) == MAX_VIDEO_FRAMES:
                    raise too_long(f"more than {MAX_VIDEO_FRAMES}")
                frames.append(frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
    except InputProblem:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        raise InputProblem("That file is not a video this demo can read. Please upload an MP4, WebM, AVI or MOV "
                           "clip.") from None
    if not frames:
        raise InputProblem("That video decodes to no frames.")
    return np.stack(frames)


def too_long(count) -> InputProblem:
    return InputProblem(f"That video has {count} frames; the demo takes up to {MAX_VIDEO_FRAMES}. Please trim it.")


def segment_middles(total: int, count: int) -> np.ndarray:
    """The middle frame of each of `count` equal segments of `total` frames (VideoMAE's evaluation sampling)."""
    edges = np.linspace(0, total, count + 1)
    return np.minimum(((edges[:-1] + edges[1:]) / 2).astype(np.int64), total - 1)


class Tab:
    """The video tab for one model."""

    title = "Video"

    def __init__(self, model_id: str, task: str = TASKS[0]):
        self.model_id, self.task = model_id, task
        self.model = load_model(model_id, AutoModelForVideoClassification)
        self.processor = AutoImageProcessor.from_pretrained(model_id)
        self.num_frames = int(self.model.config.vision_config.num_frames)

    def classify(self, path: str | None):
        """(top-5 {label: probability}, strip tiles [(image, caption)]) for one video file."""
        frames = decode_frames(path)
        clip = frames[segment_middles(len(frames), self.num_frames)]
        pixel_values = self.processor(list(clip), return_tensors="pt")["pixel_values"]
        outputs, maps, layout = run_with_maps(self.model, {"pixel_values": pixel_values}, kinds=("magnitude",))
        labels = top_scores(outputs.logits[0].softmax(-1), self.model.config.id2label)
        steps = layout.grid_shape[0]
        tiles = []
        for stage, caption in (("trunk", "trunk output"), ("block", "after block")):
            if stage not in maps["magnitude"]:
                continue
            for step in range(steps):
                # The tubelet's middle frame, under its time step's map.
                frame = clip[min(len(clip) - 1, (2 * step + 1) * len(clip) // (2 * steps))]
                heatmap = maps["magnitude"][stage][0, step].numpy()
                tiles.append((overlay(Image.fromarray(frame), heatmap, TILE_SIDE), f"t{step + 1} · {caption}"))
        return labels, tiles

    def run(self, path, started):
        labels, tiles = self.classify(path)
        best = next(iter(labels))
        return labels, tiles, f"Predicted **{best}** ({labels[best]:.0%}) in {elapsed_ms(started)}, decoding included."

    def build(self, api_name: str) -> None:
        gr.Markdown(model_header(self.model_id, self.model))
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(sources=["upload"], label="Video clip", height=240)
                button = gr.Button("Classify clip", variant="primary", elem_id=f"{api_name}-run")
                examples = example_files(self.task, "*.webm")
                if examples:
                    gr.Examples(examples, inputs=video, label="Examples (moving shapes)",
                                elem_id=f"{api_name}-examples")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload a clip or pick an example.", elem_id=f"{api_name}-status")
                labels = gr.Label(num_top_classes=5, label="Top 5")
                strip = gr.Gallery(label="Magnitude maps per tubelet time step", columns=self.num_frames // 2 or 4,
                                   height="auto", object_fit="contain", allow_preview=False)
        button.click(guarded(self.run, "classifying this clip"), video, [labels, strip, status], api_name=api_name,
                     concurrency_limit=1, concurrency_id="model")

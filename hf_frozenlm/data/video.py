"""Video-classification datasets: the builtin moving-shapes set, or `videofolder:PATH` of video files in class folders.

Everything becomes a `datasets.DatasetDict` with `train`/`validation`/`test` splits and a `label` column of
`ClassLabel` ids, like the image data. The `video` column holds decoded uint8 frames (builtin) or a file path that is
decoded with PyAV when a batch is drawn, sampling frames as VideoMAE does.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, UsageError
from .randomness import ExampleRandomness
from .splits import carve_missing_splits

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")

# -- builtin: moving shapes ---------------------------------------------------------------------------------------
# Four classes are a direction of motion, two the order in which two shapes appear. Every clip's middle frame looks
# alike across the classes of its family (a shape anywhere; both shapes present), so a model that sees one frame is
# stuck near 1/3 accuracy (it can tell the two families apart, nothing more): the set needs time.
MOVING_SHAPES_LABELS = (
    "moving left", "moving right", "moving up", "moving down", "square appears first", "disc appears first",
)


def _draw(frame: np.ndarray, kind: str, cx: float, cy: float, radius: float, colour: np.ndarray) -> None:
    """Draw a filled square or disc of `radius` centred at (cx, cy) into an (H, W, 3) uint8 frame, in place."""
    height, width = frame.shape[:2]
    ys, xs = np.arange(height)[:, None], np.arange(width)[None, :]
    if kind == "square":
        mask = (np.abs(xs + 0.5 - cx) <= radius) & (np.abs(ys + 0.5 - cy) <= radius)
    else:
        mask = (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= radius**2
    frame[mask] = colour


def moving_shapes_clip(label: int, rng: np.random.Generator, num_frames: int = 8, size: int = 32) -> np.ndarray:
    """One (T, H, W, 3) uint8 clip of class `label` (an index into MOVING_SHAPES_LABELS) on a noisy background."""
    background = rng.integers(0, 40, size=3)
    clip = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    clip[:] = background
    # Shapes of 4 to 6 px radius on 32 px: smaller ones kept a tiny trunk on its initial plateau several times longer.
    radius = rng.uniform(size / 8, size / 5)
    colours = rng.integers(120, 256, size=(2, 3))
    if label < 4:
        kind = ("square", "disc")[rng.integers(2)]
        # The whole path covers 9 to 16 px of 32 (1.3 to 2.3 px a frame at 8 frames), whatever the frame count.
        travel = rng.uniform(size * 7 / 24, size / 2)
        speed = travel / max(1, num_frames - 1)
        direction = ((-1, 0), (1, 0), (0, -1), (0, 1))[label]
        # The start is drawn so that the whole path stays inside the frame: then the path's midpoint is uniform over
        # the same central area for every direction, and one frame says next to nothing about where the shape goes.
        low, high = radius, size - radius
        start = []
        for step in direction:
            if step < 0:
                start.append(rng.uniform(low + travel, high))
            elif step > 0:
                start.append(rng.uniform(low, high - travel))
            else:
                start.append(rng.uniform(low + travel / 2, high - travel / 2))
        for t in range(num_frames):
            _draw(clip[t], kind, start[0] + direction[0] * speed * t, start[1] + direction[1] * speed * t, radius,
                  colours[0])
    else:
        # Square and disc at separate places; the first appears in the first quarter, the second at least two
        # frames later but before the middle frame, and both stay: from the middle on, every clip shows both.
        first_kind, second_kind = ("square", "disc") if label == 4 else ("disc", "square")
        first_time = int(rng.integers(0, max(1, num_frames // 4)))
        second_time = int(rng.integers(first_time + 2, max(first_time + 3, num_frames // 2)))
        second_time = min(second_time, num_frames // 2)
        while True:
            centres = rng.uniform(radius, size - radius, size=(2, 2))
            if np.linalg.norm(centres[0] - centres[1]) > 2.5 * radius:
                break
        for t in range(num_frames):
            if t >= first_time:
                _draw(clip[t], first_kind, *centres[0], radius, colours[0])
            if t >= second_time:
                _draw(clip[t], second_kind, *centres[1], radius, colours[1])
    noise = rng.integers(-12, 13, size=clip.shape)
    return np.clip(clip.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def moving_shapes_dataset(
    clips_per_class: int = 100, num_frames: int = 8, size: int = 32, seed: int = 0, split_seed: int | None = None,
    validation_fraction: float = 0.1, test_fraction: float = 0.2,
):
    """The builtin moving-shapes set as a stratified DatasetDict with `video` ((T, H, W, 3) uint8) and `label`.

    `seed` draws the clips (the same set every time by default), `split_seed` (default: `seed`) carves the splits.
    """
    import datasets

    if clips_per_class < 5:
        raise DataError(f"moving-shapes with {clips_per_class} clip(s) per class cannot fill train, validation and "
                        "test splits; use at least 5.")
    rng = np.random.default_rng(seed)
    labels = [label for label in range(len(MOVING_SHAPES_LABELS)) for _ in range(clips_per_class)]
    clips = [moving_shapes_clip(label, rng, num_frames, size) for label in labels]
    features = datasets.Features({
        "video": datasets.Array4D(shape=(num_frames, size, size, 3), dtype="uint8"),  # (T, H, W, 3)
        "label": datasets.ClassLabel(names=list(MOVING_SHAPES_LABELS)),
    })
    table = datasets.Dataset.from_dict({"video": np.stack(clips), "label": labels}, features=features)
    split_seed = seed if split_seed is None else split_seed
    splits = carve_missing_splits(datasets.DatasetDict(train=table), "label", split_seed, validation_fraction,
                                  test_fraction)
    # numpy format: a collator reads a clip as one array; python lists of nested lists cost more than a step.
    return splits.with_format("numpy")


def write_video(path: str, frames: np.ndarray, fps: int = 8) -> str:
    """Write (T, H, W, 3) uint8 frames as a lossless-enough H.264/MPEG-4 file with PyAV (for tests and examples)."""
    av = require_av()
    frames = np.asarray(frames, dtype=np.uint8)  # datasets' numpy format hands uint8 columns back as int64
    with av.open(path, mode="w") as container:
        codec = "mpeg4"
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "1"}  # near-lossless: decoded frames stay close to the generated ones
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# -- user videos ----------------------------------------------------------------------------------------------------
def require_av():
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "Decoding video files needs PyAV: pip install 'hf_frozenlm[video]' (or pip install av)."
        ) from error
    return av


def decode_video(path: str) -> np.ndarray:
    """All frames of a video file as (T, H, W, 3) uint8 RGB, or a DataError naming the file if it is not a video."""
    av = require_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream.")
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except DataError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"{path} is not a readable video file ({type(error).__name__}: {error}).") from error
    if not frames:
        raise DataError(f"{path} decodes to no frames.")
    return np.stack(frames)


def sample_frame_indices(
    total: int, num_frames: int, mode: str = "segment", sample_rate: int = 4, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Which of `total` frames to keep, as VideoMAE samples them.

    segment (VideoMAE on Something-Something): split the video into `num_frames` equal segments and take one frame
        from each, a random one drawn from `rng` when given (training), the middle one otherwise.
    dense (VideoMAE on Kinetics): a window of `num_frames * sample_rate` frames, every `sample_rate`-th frame, at a
        random start drawn from `rng` when given, centred otherwise. Short videos repeat their last frame.
    """
    if total < 1:
        raise DataError("The video has no frames.")
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: sample at least one frame.")
    if mode == "segment":
        edges = np.linspace(0, total, num_frames + 1)
        if rng is not None:
            indices = edges[:-1] + rng.random(num_frames) * (edges[1:] - edges[:-1])
        else:
            indices = (edges[:-1] + edges[1:]) / 2
        return np.minimum(indices.astype(np.int64), total - 1)
    if mode == "dense":
        window = num_frames * sample_rate
        slack = max(0, total - window)
        start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
        return np.minimum(start + np.arange(num_frames) * sample_rate, total - 1)
    raise ValueError(f"Unknown frame sampling mode {mode!r}; use 'segment' or 'dense'.")


def parse_test_views(text: str) -> tuple[int, int]:
    """`--test_views CLIPSxCROPS` (e.g. 2x3, VideoMAE's SSv2 test) -> (temporal clips, spatial crops)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) not in (1, 3):
        raise UsageError(f"--test_views {text!r}: pass CLIPSxCROPS with 1 or more clips and 1 or 3 crops, e.g. 1x1 "
                         "(one central clip) or 2x3 (VideoMAE's test).")
    return int(match.group(1)), int(match.group(2))


def test_clip_indices(total: int, num_frames: int, clips: int, mode: str = "segment",
                      sample_rate: int = 4) -> list[np.ndarray]:
    """The frame indices of `clips` evenly spaced test clips of a `total`-frame video (one clip: as evaluation
    samples today).

    segment: clip t takes from each of the `num_frames` equal segments the frame at (t + 0.5) / clips of its length
        (clip starts evenly spaced over the first segment, so together they cover the video).
    dense: windows of `num_frames * sample_rate` frames whose starts run evenly from the first frame to the last
        start that fits (VideoMAE's Kinetics test); one clip is centred.
    """
    if clips == 1:
        return [sample_frame_indices(total, num_frames, mode, sample_rate)]
    if mode == "segment":
        edges = np.linspace(0, total, num_frames + 1)
        return [np.minimum((edges[:-1] + (clip + 0.5) / clips * (edges[1:] - edges[:-1])).astype(np.int64),
                           total - 1) for clip in range(clips)]
    if mode == "dense":
        slack = max(0, total - num_frames * sample_rate)
        return [np.minimum(int(slack * clip / (clips - 1)) + np.arange(num_frames) * sample_rate, total - 1)
                for clip in range(clips)]
    raise ValueError(f"Unknown frame sampling mode {mode!r}; use 'segment' or 'dense'.")


def spatial_crop_boxes(height: int, width: int, crops: int) -> list[tuple[int, int, int]]:
    """(top, left, side) of `crops` squares of the short side along the longer side: 3 = start, centre, end (left /
    centre / right, or top / centre / bottom), as VideoMAE's test crops; 1 = the centre."""
    side = min(height, width)
    starts = [(max(height, width) - side) // 2] if crops == 1 else \
        [int(index * (max(height, width) - side) / (crops - 1)) for index in range(crops)]
    return [(start, 0, side) if height > width else (0, start, side) for start in starts]


def probe_video(path: str) -> str | None:
    """Why PyAV cannot read `path` as a video (no stream, not a container, no frame), or None when it can.

    Opens the container and decodes one frame: far cheaper than decoding the file, and it catches what decoding
    every batch would otherwise hit in the middle of training.
    """
    av = require_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            for _ in container.decode(video=0):
                return None
            return "no frames"
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
        return f"{type(error).__name__}: {error}"


def video_folder_dataset(root: str, seed: int = 42, validation_fraction: float = 0.1, test_fraction: float = 0.2,
                         strict: bool = False):
    """Video files in class folders (ROOT/<class>/<video>, or ROOT/<split>/<class>/<video> with split in
    train/validation(or val)/test) as a DatasetDict whose `video` column holds the file paths.

    Returns (splits, skipped): files PyAV cannot open are left out and counted (or a DataError when `strict`);
    missing validation / test splits are carved from train, stratified by class.
    """
    import datasets

    if not os.path.isdir(root):
        raise DataError(f"{root!r} is not a folder; videofolder:PATH takes PATH/<class>/<video> or "
                        "PATH/<split>/<class>/<video>.")
    split_names = [name for name in ("train", "validation", "val", "test") if os.path.isdir(os.path.join(root, name))]
    layout = {("validation" if name == "val" else name): os.path.join(root, name) for name in split_names}
    if not layout:
        layout = {"train": root}
    if "train" not in layout:
        raise DataError(f"{root} has split folders {split_names} but no train/ folder.")
    classes = sorted({entry for folder in layout.values() for entry in os.listdir(folder)
                      if os.path.isdir(os.path.join(folder, entry)) and not entry.startswith(".")})
    if len(classes) < 2:
        raise DataError(
            f"{root} holds {len(classes)} class folder(s){' (' + repr(classes[0]) + ')' if classes else ''}; a "
            "classifier needs at least two. Put each class's videos in its own folder: PATH/<class>/<video>."
        )
    features = datasets.Features({"video": datasets.Value("string"), "label": datasets.ClassLabel(names=classes)})
    splits, unreadable = {}, []
    for split, folder in layout.items():
        paths, labels = [], []
        for index, name in enumerate(classes):
            directory = os.path.join(folder, name)
            if not os.path.isdir(directory):
                continue
            for file in sorted(os.listdir(directory)):
                if not file.lower().endswith(VIDEO_EXTENSIONS):
                    continue
                path = os.path.join(directory, file)
                problem = probe_video(path)
                if problem is not None:
                    if strict:
                        raise DataError(f"{path} is not a readable video file ({problem}). Remove it, or drop "
                                        "--strict_images to skip unreadable files.")
                    unreadable.append(path)
                    continue
                paths.append(path)
                labels.append(index)
        if not paths:
            raise DataError(f"{folder} has no readable video files ({', '.join(VIDEO_EXTENSIONS)}) in its class "
                            f"folders{f' ({len(unreadable)} unreadable)' if unreadable else ''}.")
        splits[split] = datasets.Dataset.from_dict({"video": paths, "label": labels}, features=features)
    if unreadable:
        logger.warning("Skipped %d unreadable video file(s): %s", len(unreadable),
                       ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else ""))
    splits = carve_missing_splits(datasets.DatasetDict(splits), "label", seed, validation_fraction, test_fraction)
    return splits, len(unreadable)


# -- batches --------------------------------------------------------------------------------------------------------
def whole_clip(video) -> np.ndarray:
    """A video (file path or array) as its whole (frames, H, W, 3) uint8 array."""
    clip = decode_video(video) if isinstance(video, str) else np.asarray(video)
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise DataError(f"A clip has shape {tuple(clip.shape)}; expected (frames, height, width, 3) RGB.")
    return clip.astype(np.uint8, copy=False)  # datasets' numpy format hands uint8 columns back as int64


@dataclass
class VideoCollator:
    """A Trainer `data_collator`: examples with `video` (uint8 array or file path) and `label` -> `pixel_values`
    (B, T, C, H, W) and `labels`, through the model's image processor (resize, crop, rescale, normalise: what
    `pipeline("video-classification")` does at inference).

    A collator rather than a `set_transform`: transforms see python lists, and turning a clip's nested lists back into
    an array costs more than the training step of a small model (the datasets are kept in numpy format instead).

    Clips with other than `num_frames` frames (and every decoded file) are sampled with `sample_frame_indices`.
    train=True samples at random positions within the segments and, when `flip`, flips clips horizontally (off by
    default: a flip turns "moving left" into "moving right"), drawing from each example's own generator
    (`randomness`, see data/randomness.py); evaluation (train=False) is deterministic.

    test_views (clips, crops) other than (1, 1), evaluation only: each video becomes clips x crops views
    (`test_clip_indices` x `spatial_crop_boxes`, each crop resized by the processor), stacked clip-major into the batch
    dimension, and `num_views` (B,) says how many rows each example has (FrozenLMTrainer averages them).
    """

    image_processor: object
    num_frames: int
    train: bool = False
    mode: str = "segment"
    sample_rate: int = 4
    flip: bool = False
    randomness: ExampleRandomness | None = None
    test_views: tuple[int, int] = (1, 1)

    def frames(self, video, rng: np.random.Generator | None = None) -> np.ndarray:
        """One clip as (num_frames, H, W, 3) uint8; `rng` (training) draws the frame positions and the flip."""
        clip = whole_clip(video)
        if len(clip) != self.num_frames or isinstance(video, str):
            clip = clip[sample_frame_indices(len(clip), self.num_frames, self.mode, self.sample_rate, rng)]
        if rng is not None and self.flip and rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        return np.ascontiguousarray(clip)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise DataError("Cannot collate an empty batch of clips.")
        if tuple(self.test_views) != (1, 1) and not self.train:
            return self.multi_view_batch(examples)
        out = {"pixel_values": self.pixel_values([self.frames(example["video"], self.example_rng(example))
                                                  for example in examples])}
        if "label" in examples[0]:
            out["labels"] = torch.tensor([int(example["label"]) for example in examples])
        return out

    def views(self, video) -> list[np.ndarray]:
        """The test views of one video: clips x crops clips of `num_frames` frames (crops as squares of the short
        side; one crop leaves the frame whole for the processor's own centre crop, as a single view does)."""
        clip = whole_clip(video)
        clips, crops = self.test_views
        boxes = spatial_crop_boxes(clip.shape[1], clip.shape[2], crops) if crops > 1 else [None]
        views = []
        for indices in test_clip_indices(len(clip), self.num_frames, clips, self.mode, self.sample_rate):
            for box in boxes:
                frames = clip[indices]
                if box is not None:
                    top, left, side = box
                    frames = frames[:, top:top + side, left:left + side]
                views.append(np.ascontiguousarray(frames))
        return views

    def multi_view_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        views = [self.views(example["video"]) for example in examples]
        out = {"pixel_values": self.pixel_values([view for example_views in views for view in example_views]),
               "num_views": torch.tensor([len(example_views) for example_views in views])}
        if "label" in examples[0]:
            out["labels"] = torch.tensor([int(example["label"]) for example in examples])
        return out

    def example_rng(self, example: dict) -> np.random.Generator | None:
        """The example's own generator when training draws something from it, else None (no draw, no id needed)."""
        clip = example["video"]
        draws = self.flip or isinstance(clip, str) or len(clip) != self.num_frames
        return ExampleRandomness.of(self.randomness).rng(example) if self.train and draws else None

    def pixel_values(self, clips: list[np.ndarray]) -> torch.Tensor:
        """(B, T, C, H, W) float pixel values; clips the processor would neither resize nor crop skip its PIL round
        trip (which is most of the cost) and are only rescaled and normalised, as the processor would."""
        processor = self.image_processor
        if not all(_processor_keeps_size(processor, clip.shape[1], clip.shape[2]) for clip in clips):
            return processor([list(clip) for clip in clips], return_tensors="pt")["pixel_values"]
        pixels = np.stack(clips).astype(np.float32)  # (B, T, H, W, C)
        if processor.do_rescale:
            pixels = pixels * np.float32(processor.rescale_factor)
        if processor.do_normalize:
            mean = np.asarray(processor.image_mean, dtype=np.float32)
            std = np.asarray(processor.image_std, dtype=np.float32)
            pixels = (pixels - mean) / std
        return torch.from_numpy(pixels).permute(0, 1, 4, 2, 3).contiguous()


def _processor_keeps_size(processor, height: int, width: int) -> bool:
    """Whether the processor's resize and centre crop leave a (height, width) frame as it is."""
    size = dict(getattr(processor, "size", None) or {})
    if getattr(processor, "do_resize", False):
        if "shortest_edge" in size:
            if min(height, width) != size["shortest_edge"]:
                return False
        elif (size.get("height"), size.get("width")) != (height, width):
            return False
    crop = dict(getattr(processor, "crop_size", None) or {})
    if getattr(processor, "do_center_crop", False) and (crop.get("height"), crop.get("width")) != (height, width):
        return False
    return True


def video_image_processor(size: int, source: str | None = None):
    """VideoMAE's image processor at `size` px (shortest edge, then a centre crop), without torchvision.

    `source`: a pretrained VideoMAE checkpoint or model folder whose preprocessor_config.json (mean / std) is kept.
    """
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    if source is not None and os.path.isfile(os.path.join(str(source), "preprocessor_config.json")):
        processor = VideoMAEImageProcessorPil.from_pretrained(source)
        processor.size = {"shortest_edge": size}
        processor.crop_size = {"height": size, "width": size}
        return processor
    return VideoMAEImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

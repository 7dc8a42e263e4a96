"""Video-classification datasets: the builtin moving-shapes set, or `videofolder:PATH` of video files in class folders.

Everything becomes a `datasets.DatasetDict` with `train`/`validation`/`test` splits and a `label` column of
`ClassLabel` ids, like the image data. The `video` column holds decoded uint8 frames (builtin) or a file path that is
decoded with PyAV when a batch is drawn, sampling frames as VideoMAE does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .data import DataError, carve_missing_splits

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
    radius = rng.uniform(size / 12, size / 8)
    colours = rng.integers(120, 256, size=(2, 3))
    if label < 4:
        kind = ("square", "disc")[rng.integers(2)]
        speed = rng.uniform(size / 24, size / 14)  # pixels per frame
        travel = speed * (num_frames - 1)
        direction = ((-1, 0), (1, 0), (0, -1), (0, 1))[label]
        # The start is drawn so that the whole path stays inside the frame: then the middle position is uniform over
        # the same central area for every direction, and one frame says nothing about where the shape is going.
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
    clips_per_class: int = 100, num_frames: int = 8, size: int = 32, seed: int = 0,
    validation_fraction: float = 0.1, test_fraction: float = 0.2,
):
    """The builtin moving-shapes set as a seeded, stratified DatasetDict with `video` ((T, H, W, 3) uint8) and `label`."""
    import datasets

    rng = np.random.default_rng(seed)
    labels = [label for label in range(len(MOVING_SHAPES_LABELS)) for _ in range(clips_per_class)]
    clips = [moving_shapes_clip(label, rng, num_frames, size) for label in labels]
    features = datasets.Features({
        "video": datasets.Array4D(shape=(num_frames, size, size, 3), dtype="uint8"),  # (T, H, W, 3)
        "label": datasets.ClassLabel(names=list(MOVING_SHAPES_LABELS)),
    })
    table = datasets.Dataset.from_dict({"video": np.stack(clips), "label": labels}, features=features)
    splits = carve_missing_splits(datasets.DatasetDict(train=table), "label", seed, validation_fraction, test_fraction)
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
        from each, a random one when `rng` is given (training), the middle one otherwise.
    dense (VideoMAE on Kinetics): a window of `num_frames * sample_rate` frames, every `sample_rate`-th frame, at a
        random start when `rng` is given, centred otherwise. Short videos repeat their last frame.
    """
    if total < 1:
        raise DataError("The video has no frames.")
    if mode == "segment":
        edges = np.linspace(0, total, num_frames + 1)
        if rng is None:
            indices = (edges[:-1] + edges[1:]) / 2
        else:
            indices = edges[:-1] + rng.random(num_frames) * (edges[1:] - edges[:-1])
        return np.minimum(indices.astype(np.int64), total - 1)
    if mode == "dense":
        window = num_frames * sample_rate
        slack = max(0, total - window)
        start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
        return np.minimum(start + np.arange(num_frames) * sample_rate, total - 1)
    raise ValueError(f"Unknown frame sampling mode {mode!r}; use 'segment' or 'dense'.")


def video_folder_dataset(root: str, seed: int = 42, validation_fraction: float = 0.1, test_fraction: float = 0.2):
    """Video files in class folders (ROOT/<class>/<video>, or ROOT/<split>/<class>/<video> with split in
    train/validation/test) as a DatasetDict whose `video` column holds the file paths."""
    import datasets

    if not os.path.isdir(root):
        raise DataError(f"{root!r} is not a directory of class folders of videos.")
    split_names = [name for name in ("train", "validation", "val", "test") if os.path.isdir(os.path.join(root, name))]
    layout = {("validation" if name == "val" else name): os.path.join(root, name) for name in split_names}
    if not layout:
        layout = {"train": root}
    if "train" not in layout:
        raise DataError(f"{root} has split folders {split_names} but no train/ folder.")
    classes = sorted({c for folder in layout.values() for c in os.listdir(folder) if os.path.isdir(os.path.join(folder, c))})
    if len(classes) < 2:
        raise DataError(f"{root} holds {len(classes)} class folder(s); put each class's videos in ROOT/<class>/.")
    features = datasets.Features({"video": datasets.Value("string"), "label": datasets.ClassLabel(names=classes)})
    splits = {}
    for split, folder in layout.items():
        paths, labels = [], []
        for index, name in enumerate(classes):
            directory = os.path.join(folder, name)
            if not os.path.isdir(directory):
                continue
            for file in sorted(os.listdir(directory)):
                if file.lower().endswith(VIDEO_EXTENSIONS):
                    paths.append(os.path.join(directory, file))
                    labels.append(index)
        if not paths:
            raise DataError(f"{folder} has no video files ({', '.join(VIDEO_EXTENSIONS)}) in its class folders.")
        splits[split] = datasets.Dataset.from_dict({"video": paths, "label": labels}, features=features)
    return carve_missing_splits(datasets.DatasetDict(splits), "label", seed, validation_fraction, test_fraction)


# -- batches --------------------------------------------------------------------------------------------------------
@dataclass
class VideoCollator:
    """A Trainer `data_collator`: examples with `video` (uint8 array or file path) and `label` -> `pixel_values`
    (B, T, C, H, W) and `labels`, through the model's image processor (resize, crop, rescale, normalise: what
    `pipeline("video-classification")` does at inference).

    A collator rather than a `set_transform`: transforms see python lists, and turning a clip's nested lists back into
    an array costs more than the training step of a small model (the datasets are kept in numpy format instead).
    train=True samples frames at random positions within their segments and flips clips horizontally when `flip`
    (off by default: a flip turns "moving left" into "moving right").
    """

    image_processor: object
    num_frames: int
    train: bool = False
    mode: str = "segment"
    sample_rate: int = 4
    flip: bool = False
    seed: int = 0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def frames(self, video) -> np.ndarray:
        clip = decode_video(video) if isinstance(video, str) else np.asarray(video, dtype=np.uint8)
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise DataError(f"A clip has shape {clip.shape}; expected (frames, height, width, 3) RGB.")
        if len(clip) != self.num_frames or isinstance(video, str):
            rng = self.rng if self.train else None
            clip = clip[sample_frame_indices(len(clip), self.num_frames, self.mode, self.sample_rate, rng)]
        if self.train and self.flip and self.rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        return np.ascontiguousarray(clip)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        out = {"pixel_values": self.pixel_values([self.frames(example["video"]) for example in examples])}
        if examples and "label" in examples[0]:
            out["labels"] = torch.tensor([int(example["label"]) for example in examples])
        return out


    def pixel_values(self, clips: list[np.ndarray]) -> torch.Tensor:
        """(B, T, C, H, W) float pixel values; clips already at the processor's crop size skip the PIL round trip
        (resizing to the same size and centre-cropping to it are the identity), which is most of the cost."""
        processor = self.image_processor
        crop = getattr(processor, "crop_size", None) or {}
        same_size = all(clip.shape[1:3] == (crop.get("height"), crop.get("width")) for clip in clips)
        if not (same_size and processor.do_rescale and processor.do_normalize):
            return processor([list(clip) for clip in clips], return_tensors="pt")["pixel_values"]
        mean = np.asarray(processor.image_mean, dtype=np.float32)
        std = np.asarray(processor.image_std, dtype=np.float32)
        pixels = (np.stack(clips).astype(np.float32) * processor.rescale_factor - mean) / std  # (B, T, H, W, C)
        return torch.from_numpy(pixels).permute(0, 1, 4, 2, 3).contiguous()


def video_image_processor(size: int):
    """VideoMAE's image processor at `size` px (shortest edge, then a centre crop), without torchvision."""
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    return VideoMAEImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

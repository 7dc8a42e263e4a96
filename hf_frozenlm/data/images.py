"""Image-classification datasets: the builtin digits, `imagefolder:PATH`, or a Hub dataset.

Everything becomes a `datasets.DatasetDict` with `train`/`validation`/`test` splits, an `image` column of PIL images
and a `label` column of `ClassLabel` ids, so the rest of the package never special-cases a source.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import DataError
from .splits import carve_missing_splits

logger = logging.getLogger(__name__)

IMAGE_COLUMN_CANDIDATES = ("image", "img")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label")
VALIDATION_SPLIT_CANDIDATES = ("validation", "valid", "val", "dev")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# -- sources ---------------------------------------------------------------------------------------------
def digits_dataset(split_seed: int = 42, validation_fraction: float = 0.1, test_fraction: float = 0.2):
    """scikit-learn's 8x8 handwritten digits (1797 images, real scans) as a seeded, stratified DatasetDict.

    Drawn as dark ink on white, like a sketch on paper, so a user's drawing matches the training images.
    """
    import datasets
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0 (paper) .. 16 (ink); invert to 255 = white paper.
    pixels = (255 - np.round(digits.images * (255 / 16))).astype(np.uint8)  # (N, 8, 8)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    table = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p, mode="L") for p in pixels], "label": digits.target.tolist()}, features=features
    )
    return carve_missing_splits(datasets.DatasetDict(train=table), "label", split_seed, validation_fraction,
                                test_fraction)


def load_raw_dataset(args):
    """The source named by `--dataset` as a DatasetDict (no column or split normalisation yet)."""
    import datasets

    if args.dataset.startswith("imagefolder:"):
        path = args.dataset.split(":", 1)[1]
        if not os.path.isdir(path):
            raise DataError(f"--dataset {args.dataset}: {path!r} is not a directory.")
        images = [name for _, _, files in os.walk(path) for name in files if name.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise DataError(
                f"--dataset {args.dataset}: {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}). Put each "
                "class's images in its own sub-folder: PATH/<class name>/<image>.png."
            )
        # Decoding is deferred (decode=False below) so that corrupt files can be counted instead of crashing.
        try:
            return datasets.load_dataset("imagefolder", data_dir=path)
        except (ValueError, OSError) as error:
            raise DataError(f"--dataset {args.dataset}: datasets could not read {path} as an image folder ({error}).") from error
    try:
        return datasets.load_dataset(args.dataset, args.dataset_config)
    except Exception as error:  # many error types: offline, not found, gated, bad config
        raise DataError(
            f"Could not load the Hub dataset {args.dataset!r} (config {args.dataset_config!r}): {error}. "
            "--dataset takes `digits`, `imagefolder:PATH` or a Hub dataset name (needs the network unless cached)."
        ) from error


# -- normalisation -----------------------------------------------------------------------------------------
def detect_column(columns: list[str], override: str | None, candidates: tuple[str, ...], kind: str, option: str):
    """The column to use for `kind` (image/label): the override if present, else the first candidate found."""
    if override is not None:
        if override not in columns:
            raise DataError(
                f"{option} {override!r} is not a column of the dataset; its columns are {columns}. "
                f"Pass {option} with one of them."
            )
        return override
    for name in candidates:
        if name in columns:
            return name
    hint = (
        " An imagefolder dataset gets labels from class sub-folders (PATH/<class>/<image>.png) or a `label` "
        "column in metadata.csv/metadata.jsonl."
        if kind == "label" else ""
    )
    raise DataError(
        f"Found no {kind} column: looked for {', '.join(candidates)}; the dataset has columns {columns}. "
        f"Pass {option} NAME.{hint}"
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparent pixels become white (a drawing on a transparent canvas is ink on paper)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits before converting (PIL would clip instead).
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1.0)
        image = Image.fromarray(((array - array.min()) * (255.0 / span)).astype(np.uint8), mode="L")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def read_image_files(paths: list[str]) -> list[Image.Image]:
    """Image files as RGB images, converted as in training (transparent pixels become white paper)."""
    from PIL import UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                # .copy() reads the pixels before the file closes (to_rgb returns RGB images as they are).
                images.append(to_rgb(image).copy())
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"Cannot read {path} as an image ({error}).") from error
    return images


def decode_image(value, min_size: int | None = None) -> Image.Image:
    """A decoded PIL image from a PIL image or an undecoded `datasets.Image` value ({"bytes", "path"}).

    min_size: decode a JPEG at the largest DCT reduction (1/2, 1/4, 1/8) that keeps both sides >= min_size (PIL's
    draft mode), which skips most of the decoding work of large photos; other formats decode at full size.
    """
    if isinstance(value, Image.Image):
        return value
    image = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") is not None else Image.open(value["path"])
    if min_size and image.format == "JPEG":
        image.draft("RGB", (min_size, min_size))
    image.load()
    return image


def _open_image(value) -> Image.Image:
    """Decode an undecoded `datasets.Image` value ({"bytes", "path"}) fully, so truncated files fail here."""
    if isinstance(value, Image.Image):
        value.load()
        return value
    if value.get("bytes") is not None:
        image = Image.open(io.BytesIO(value["bytes"]))
    else:
        image = Image.open(value["path"])
    image.load()
    return image


def _image_error(value) -> str | None:
    """None when the image decodes fully, else why not."""
    try:
        _open_image(value)
        return None
    except Exception as error:  # PIL raises several types for corrupt or truncated files
        return f"{type(error).__name__}: {error}"


def drop_unreadable_images(splits, image_column: str, strict: bool):
    """Remove rows whose image cannot be decoded; count them (or fail with `--strict_images`)."""
    import datasets

    total_skipped = 0
    cleaned = {}
    for split_name, split in splits.items():
        feature = split.features[image_column]
        if not isinstance(feature, datasets.Image):
            cleaned[split_name] = split
            continue
        raw = split.cast_column(image_column, datasets.Image(decode=False))
        # A batched map: parallel on large datasets, and cached by datasets for file-backed ones, so the decode
        # pass runs once (on the main process first under torchrun) rather than on every start and every rank.
        flags = raw.map(
            lambda batch: {"_image_error": [_image_error(value) for value in batch[image_column]]},
            batched=True, batch_size=256, num_proc=min(8, os.cpu_count() or 1) if len(raw) > 20000 else None,
            remove_columns=raw.column_names, desc=f"checking {split_name} images",
        )["_image_error"]
        bad = [(index, (raw[index][image_column] or {}).get("path") or f"row {index}", error)
               for index, error in enumerate(flags) if error]
        if bad:
            if strict:
                listing = "; ".join(f"{where}: {error}" for _, where, error in bad[:5])
                raise DataError(
                    f"{len(bad)} unreadable image(s) in split {split_name!r} ({listing}"
                    f"{'; ...' if len(bad) > 5 else ''}). Remove or fix them, or drop --strict_images to skip them."
                )
            bad_rows = {index for index, _, _ in bad}
            split = split.select([i for i in range(len(split)) if i not in bad_rows])
            logger.warning("Skipped %d unreadable image(s) in split %r: %s", len(bad), split_name,
                           ", ".join(str(where) for _, where, _ in bad[:5]) + (" ..." if len(bad) > 5 else ""))
            total_skipped += len(bad)
        cleaned[split_name] = split
    return datasets.DatasetDict(cleaned), total_skipped


def load_image_classification_data(args):
    """Load `--dataset`, normalise columns/labels/splits, drop unreadable images, and validate early."""
    import datasets

    if args.dataset == "digits":
        splits = digits_dataset(args.split_seed, args.validation_fraction, args.test_fraction)
    else:
        raw = load_raw_dataset(args)
        if not isinstance(raw, datasets.DatasetDict):
            raw = datasets.DatasetDict(train=raw)
        if args.train_split not in raw:
            raise DataError(
                f"No training split {args.train_split!r}; the dataset has splits {list(raw)}. Pass --train_split NAME."
            )
        columns = raw[args.train_split].column_names
        image_column = detect_column(columns, args.image_column, IMAGE_COLUMN_CANDIDATES, "image", "--image_column")
        if args.dataset.startswith("imagefolder:") and args.label_column is None and "label" not in columns:
            _explain_missing_imagefolder_labels(args.dataset.split(":", 1)[1])
        label_column = detect_column(columns, args.label_column, LABEL_COLUMN_CANDIDATES, "label", "--label_column")
        renamed = {}
        for name, target in ((args.train_split, "train"),
                             (_pick_split(raw, args.validation_split, VALIDATION_SPLIT_CANDIDATES, "--validation_split"),
                              "validation"),
                             (_pick_split(raw, args.test_split, ("test",), "--test_split"), "test")):
            if name is None:
                continue
            split = raw[name].select_columns([image_column, label_column])
            split = split.rename_columns({c: n for c, n in ((image_column, "image"), (label_column, "label")) if c != n})
            renamed[target] = split
        splits = datasets.DatasetDict(renamed)
        splits = _encode_labels(splits, label_column)
        splits, skipped = drop_unreadable_images(splits, "image", args.strict_images)
        splits = carve_missing_splits(splits, "label", args.split_seed, args.validation_fraction, args.test_fraction)
        data = _finish(splits, args, skipped)
        return data
    return _finish(splits, args, 0)


def _explain_missing_imagefolder_labels(path: str) -> None:
    """datasets' imagefolder adds no label column for a single class folder: say so instead of 'no label column'."""
    folders = sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith("."))
    if len(folders) == 1:
        raise DataError(
            f"{path} has one class folder ({folders[0]!r}); a classifier needs at least two. Put each class in its "
            "own sub-folder: PATH/<class name>/<image>."
        )


def _pick_split(raw, override, candidates, option):
    if override is not None:
        if override not in raw:
            raise DataError(f"{option} {override!r} is not a split of the dataset; its splits are {list(raw)}.")
        return override
    return next((name for name in candidates if name in raw), None)


def _encode_labels(splits, original_name: str):
    """Make `label` a ClassLabel (ints or strings -> ids) and reject datasets without usable labels."""
    import datasets

    feature = splits["train"].features["label"]
    if isinstance(feature, datasets.Sequence) or (isinstance(feature, list)):
        raise DataError(
            f"The label column {original_name!r} holds lists (multi-label); `train` handles single-label "
            "classification. Pass --label_column with a single-label column."
        )
    if not isinstance(feature, datasets.ClassLabel):
        if not isinstance(feature, datasets.Value):
            raise DataError(f"The label column {original_name!r} has type {feature}; expected class names or ids.")
        values = set()
        for split in splits.values():
            values.update(v for v in split["label"] if v is not None)
        if any(isinstance(v, float) and not float(v).is_integer() for v in values):
            raise DataError(
                f"The label column {original_name!r} holds non-integer numbers (regression targets?); pass "
                "--label_column with class names or ids."
            )
        names = [str(v) for v in sorted(values)]
        class_label = datasets.ClassLabel(names=names)
        splits = datasets.DatasetDict({
            name: split.map(lambda row: {"label": names.index(str(row["label"]))}, desc="encoding labels")
            .cast_column("label", class_label)
            for name, split in splits.items()
        })
    return splits


def _finish(splits, args, skipped: int):
    import datasets

    for name in ("train", "validation", "test"):
        if name not in splits or len(splits[name]) == 0:
            raise DataError(f"Split {name!r} is empty after loading; the dataset has {len(splits.get('train', []))} "
                            "usable training images.")
    label_feature = splits["train"].features["label"]
    assert isinstance(label_feature, datasets.ClassLabel)
    present = sorted(set(splits["train"]["label"]))
    if len(label_feature.names) < 2 or len(present) < 2:
        found = [label_feature.names[i] for i in present]
        raise DataError(
            f"The training split has {len(present)} class ({found}); a classifier needs at least two. For an "
            "imagefolder dataset, put each class in its own sub-folder: PATH/<class name>/<image>."
        )
    from ..tasks.base import TaskData

    id2label = dict(enumerate(label_feature.names))
    return TaskData(splits=splits, name=args.dataset, id2label=id2label, skipped=skipped)


# -- augmentation (no torchvision) -------------------------------------------------------------------------
@dataclass
class RandomResizedCropFlip:
    """Random resized crop (area scale, aspect ratio) and horizontal flip on PIL images, as in DeiT's recipe, drawn
    from the generator it is given (the training collator passes each example's own, see data/randomness.py)."""

    size: int
    scale: tuple[float, float] = (0.5, 1.0)  # milder than ImageNet's 0.08: small images lose objects quickly
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5  # probability of a horizontal flip

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        width, height = image.size
        area = width * height
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            log_ratio = (np.log(self.ratio[0]), np.log(self.ratio[1]))
            aspect = float(np.exp(rng.uniform(*log_ratio)))
            w = int(round((target_area * aspect) ** 0.5))
            h = int(round((target_area / aspect) ** 0.5))
            if 0 < w <= width and 0 < h <= height:
                left = int(rng.integers(0, width - w + 1))
                top = int(rng.integers(0, height - h + 1))
                break
        else:  # fall back to the whole image
            left, top, w, h = 0, 0, width, height
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if self.flip and rng.random() < self.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


@dataclass
class ImageAugmentation:
    """DeiT's training augmentation in its order: random resized crop and flip, RandAugment (both on PIL images),
    then, after the processor normalised the image, random erasing; all from the example's own generator."""

    crop_flip: RandomResizedCropFlip | None = None
    rand_augment: object | None = None  # data.rand_augment.RandAugment
    erasing: object | None = None  # data.random_erasing.RandomErasing

    def on_image(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        if self.crop_flip is not None:
            image = self.crop_flip(image, rng)
        if self.rand_augment is not None:
            image = self.rand_augment(image, rng)
        return image

    def on_pixels(self, pixel_values, rng: np.random.Generator):
        return self.erasing(pixel_values, rng) if self.erasing is not None else pixel_values

    def draft_size(self, size: int) -> int:
        """The smallest side a decoded image needs so that the smallest crop still has `size` pixels a side."""
        scale_min = self.crop_flip.scale[0] if self.crop_flip is not None else 1.0
        return int(np.ceil(size / np.sqrt(scale_min)))


def image_augmentation(args, size: int, fill: tuple[int, ...]) -> ImageAugmentation | None:
    """The training augmentation the data options ask for (None when none): crop and flip when augmentation is on,
    RandAugment with --aa, random erasing with --reprob."""
    from .rand_augment import parse_rand_augment
    from .random_erasing import RandomErasing

    crop_scale = tuple(args.scale or (0.5, 1.0))
    augmentation = ImageAugmentation(
        crop_flip=(RandomResizedCropFlip(size, scale=crop_scale, flip=0.5 if args.hflip is None else args.hflip)
                   if use_augmentation(args) else None),
        # Given explicitly, these two apply even where crops and flips are off (digits: they would change the class).
        rand_augment=parse_rand_augment(args.aa, fill=fill) if args.aa else None,
        erasing=RandomErasing(args.reprob) if args.reprob > 0 else None,
    )
    return augmentation if (augmentation.crop_flip or augmentation.rand_augment or augmentation.erasing) else None


def use_augmentation(args) -> bool:
    return args.augment == "on" or (args.augment == "auto" and args.dataset != "digits")

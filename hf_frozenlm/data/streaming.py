"""`--streaming`: image-classification data read as it trains (ImageNet-scale Hub datasets need no full download).

The training split becomes a `datasets.IterableDataset`: images left as bytes (the collator decodes them, in the
DataLoader workers, at reduced size), a shuffling buffer reshuffled every epoch, and an `example_id` per example
from its file name or bytes, so augmentation draws are the example's own wherever it is read. `--max_steps` sets
the length of training. Across processes, accelerate (through Trainer) gives each rank its own shards of the stream
(`IterableDataset.shard`, as `datasets.distributed.split_dataset_by_node` does) when there are at least as many
shards as ranks, and otherwise every rank's own batches of it; within a process, datasets gives each DataLoader
worker its own shards. Validation and test (at most --max_eval_samples each) are read once into memory-mapped
Datasets, since evaluation needs their length.
"""

from __future__ import annotations

import zlib

from ..errors import DataError
from .images import IMAGE_COLUMN_CANDIDATES, LABEL_COLUMN_CANDIDATES, VALIDATION_SPLIT_CANDIDATES, detect_column
from .randomness import EXAMPLE_ID

DEFAULT_EVAL_EXAMPLES = 1000  # per held-out split carved from the stream when the dataset has none


def stable_example_id(image_value: dict) -> int:
    """A 31-bit id of an undecoded image, the same in every process and epoch: its path, else its bytes' CRC."""
    key = (image_value.get("path") or "").encode() or bytes(image_value.get("bytes") or b"")
    return zlib.crc32(key) & 0x7FFFFFFF


def _open_stream(args):
    import datasets

    try:
        if args.dataset.startswith("imagefolder:"):
            return datasets.load_dataset("imagefolder", data_dir=args.dataset.split(":", 1)[1], streaming=True)
        return datasets.load_dataset(args.dataset, args.dataset_config, streaming=True)
    except Exception as error:  # offline, not found, gated, bad config, no data files
        raise DataError(
            f"Could not stream the dataset {args.dataset!r} (config {args.dataset_config!r}): {error}. --streaming "
            "takes a Hub dataset name, a local folder of parquet/arrow/image files, or imagefolder:PATH."
        ) from error


def _select(stream, image_column: str, label_column: str):
    import datasets

    stream = stream.select_columns([image_column, label_column])
    renames = {c: n for c, n in ((image_column, "image"), (label_column, "label")) if c != n}
    stream = stream.rename_columns(renames) if renames else stream
    return stream.cast_column("image", datasets.Image(decode=False))


def _materialise(stream, count: int | None, features):
    """The first `count` examples of a stream (all when None) as an Arrow-backed Dataset (kept on disk by datasets)."""
    import datasets

    rows = stream.take(count) if count else stream
    return datasets.Dataset.from_list(list(rows), features=features)


def load_streaming_image_data(args, seed: int):
    """TaskData whose train split is a shuffled IterableDataset (see the module docstring)."""
    import datasets

    from ..tasks.base import TaskData

    raw = _open_stream(args)
    if args.train_split not in raw:
        raise DataError(f"No training split {args.train_split!r}; the stream has splits {list(raw)}. "
                        "Pass --train_split NAME.")
    features = raw[args.train_split].features
    if features is None:
        raise DataError(f"{args.dataset}: the stream declares no features, so its image and label columns are unknown. "
                        "Stream a dataset with declared features (parquet/arrow files, or a Hub dataset with them).")
    columns = list(features)
    image_column = detect_column(columns, args.image_column, IMAGE_COLUMN_CANDIDATES, "image", "--image_column")
    label_column = detect_column(columns, args.label_column, LABEL_COLUMN_CANDIDATES, "label", "--label_column")
    label_feature = features[label_column]
    if not isinstance(label_feature, datasets.ClassLabel):
        raise DataError(f"--streaming needs class labels declared in the dataset (a ClassLabel column); "
                        f"{label_column!r} is {label_feature}. Load it without --streaming to encode its labels.")
    train = _select(raw[args.train_split], image_column, label_column)
    eval_features = datasets.Features({"image": datasets.Image(), "label": label_feature})
    held_out = {}
    validation = args.validation_split or next((name for name in VALIDATION_SPLIT_CANDIDATES if name in raw), None)
    test = args.test_split or ("test" if "test" in raw else None)
    carve = args.max_eval_samples or DEFAULT_EVAL_EXAMPLES
    for target, name in (("validation", validation), ("test", test)):
        if name is not None:
            if name not in raw:
                raise DataError(f"--{target}_split {name!r} is not a split of the stream; its splits are {list(raw)}.")
            held_out[target] = _materialise(_select(raw[name], image_column, label_column), args.max_eval_samples,
                                            eval_features)
        else:  # carved off the head of the training stream (before shuffling), and skipped by training
            held_out[target] = _materialise(train, carve, eval_features)
            train = train.skip(carve)
    train_features = datasets.Features({"image": datasets.Image(decode=False), "label": label_feature,
                                        EXAMPLE_ID: datasets.Value("int64")})
    train = train.map(lambda example: {EXAMPLE_ID: stable_example_id(example["image"])}, features=train_features)
    train = train.shuffle(seed=seed, buffer_size=args.shuffle_buffer_size)
    if args.max_train_samples:
        train = train.take(args.max_train_samples)
    for name, split in held_out.items():
        if len(split) == 0:
            raise DataError(f"Split {name!r} is empty: the stream has too few examples.")
    id2label = dict(enumerate(label_feature.names))
    return TaskData(splits={"train": train, **held_out}, name=args.dataset, id2label=id2label,
                    info={"streaming": True, "num_shards": train.num_shards})


def first_examples(stream, count: int):
    """The first `count` examples of a stream as a Dataset (train-split metrics of a streamed run)."""
    return _materialise(stream, count, stream.features)

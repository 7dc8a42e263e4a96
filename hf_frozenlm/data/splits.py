"""Train / validation / test splits, the same way for every task."""

from __future__ import annotations

from ..errors import DataError


def carve_missing_splits(splits, label_column: str | None, seed: int, validation_fraction: float = 0.1,
                         test_fraction: float = 0.2):
    """Add `test` then `validation` carved from `train` (stratified by a ClassLabel column when possible) if missing.

    Both fractions are of all labelled training data: test is carved first, from the whole training split.
    """
    import datasets

    splits = datasets.DatasetDict(dict(splits))

    def carve(train, fraction, name):
        if not 0 < fraction < 1:
            raise DataError(f"There is no {name} split and the {name} fraction is {fraction}; pass a value in (0, 1).")
        if len(train) < 3:
            raise DataError(f"The training split has {len(train)} example(s); carving a {name} split needs at least 3.")
        feature = train.features.get(label_column) if label_column else None
        stratify = label_column if isinstance(feature, datasets.ClassLabel) else None
        try:
            parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
        except ValueError:  # too few examples per class to stratify
            parts = train.train_test_split(test_size=fraction, seed=seed)
        return parts["train"], parts["test"]

    carved_test = "test" not in splits
    if carved_test:
        splits["train"], splits["test"] = carve(splits["train"], test_fraction, "test")
    if "validation" not in splits:
        fraction = validation_fraction / (1 - test_fraction) if carved_test else validation_fraction
        splits["train"], splits["validation"] = carve(splits["train"], fraction, "validation")
    return splits


def dataset_from_examples(examples: list[dict], features=None, seed: int = 0, validation_fraction: float = 0.1,
                          test_fraction: float = 0.2, label_column: str | None = None):
    """A list of example dicts (one source, no splits of its own) -> DatasetDict with carved train/validation/test."""
    import datasets

    if not examples:
        raise DataError("The dataset holds no examples.")
    table = datasets.Dataset.from_list(examples, features=features)
    return carve_missing_splits(datasets.DatasetDict(train=table), label_column, seed, validation_fraction,
                                test_fraction)


def truncate_splits(splits, max_train_samples: int | None = None, max_eval_samples: int | None = None):
    """--max_train_samples / --max_eval_samples (debugging, quick runs): the first n examples of train, and of
    validation and test. The same for every task; applied by the training loop after the task loads its data."""
    import datasets

    limits = {"train": max_train_samples, "validation": max_eval_samples, "test": max_eval_samples}
    return datasets.DatasetDict({
        name: split.select(range(min(limits[name], len(split)))) if limits.get(name) else split
        for name, split in splits.items()
    })

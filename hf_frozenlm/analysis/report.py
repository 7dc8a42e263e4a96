"""What `hf-frozenlm analyze` (and the ablation's mIoU part) computes for saved models: examples in, maps per stage,
pictures out. The formulas and the IoU protocol are in `maps`; this module feeds them a task's examples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .maps import (
    attention_maps,
    pixel_activations,
    plot_activation_grid,
    plot_set_maps,
    token_activations_all,
    token_grid,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_examples(images=None, dataset=None, mask_column=None, image_column="image", split="validation",
                   num_images: int = 256, seed: int = 0) -> tuple[list[dict], list | None]:
    """([{"image": PIL}], masks as bool arrays or None) from image files/folders or an image dataset with masks
    ("masked-digits", a save_to_disk folder or a Hub dataset)."""
    from PIL import Image

    from ..errors import DataError

    if images:
        paths = []
        for item in map(Path, images):
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if item.is_dir() else [item]
        if not paths:
            raise DataError("no images found in " + " ".join(map(str, images)))
        return [{"image": Image.open(p).convert("RGB")} for p in paths[:num_images]], None
    if dataset == "masked-digits":
        from ..data.masked_digits import load_masked_digits

        dataset = load_masked_digits(num_images=num_images, seed=seed)
        mask_column = mask_column or "mask"
    else:
        import datasets

        dataset = datasets.load_from_disk(dataset) if Path(dataset).is_dir() else datasets.load_dataset(dataset)
        if isinstance(dataset, datasets.DatasetDict):
            chosen = split if split in dataset else next(iter(dataset)) if len(dataset) == 1 else None
            if chosen is None:
                raise DataError(f"split {split!r} not in {list(dataset)}; pass --split.")
            dataset = dataset[chosen]
        dataset = dataset.select(range(min(num_images, len(dataset))))
    for column in (image_column, mask_column):
        if column is not None and column not in dataset.column_names:
            raise DataError(f"no column {column!r}; columns: {dataset.column_names}.")
    examples = [{"image": image.convert("RGB")} for image in dataset[image_column]]
    masks = None
    if mask_column is not None:
        masks = [np.asarray(m.convert("L") if hasattr(m, "convert") else m) != 0 for m in dataset[mask_column]]
    return examples, masks


def task_examples(task, model_dir: str, dataset: str | None = None, count: int = 256) -> list[dict]:
    """Test-split examples of the dataset the run trained on (or `dataset`), as the task's collators take them."""
    from ..training.arguments import DataArguments
    from ..training.loading import recorded_data_arguments

    data_args = recorded_data_arguments(model_dir, DataArguments())
    if dataset:
        data_args = replace(data_args, dataset=dataset)
    return task.analysis_examples(task.load_data(data_args), count)


def analyse_model(task, model, processor, examples, batch_size: int, kinds) -> tuple[dict, dict, dict, list]:
    """Over all examples, batch by batch: (kind -> stage -> (N, *grid) maps, name -> (N, *grid) CLS attention,
    kind -> (N, *grid) maps of the raw input patches (images only), [TokenGrid per batch])."""
    collate = task.collators(model, processor)[1]
    activations, attention, pixels, grids = {}, {}, {}, []
    for start in range(0, len(examples), batch_size):
        inputs = {k: v for k, v in collate(examples[start:start + batch_size]).items() if k != "labels"}
        for kind, by_stage in token_activations_all(model, inputs, kinds=kinds).items():
            for stage, maps in by_stage.items():
                activations.setdefault(kind, {}).setdefault(stage, []).append(maps)
        for name, maps in attention_maps(model, inputs).items():
            attention.setdefault(name, []).append(maps)
        grid = token_grid(model, inputs)
        grids.append(grid)
        if len(grid.grid_shape) == 2 and "pixel_values" in inputs and inputs["pixel_values"].ndim == 4:
            for kind, maps in pixel_activations(inputs["pixel_values"], grid.grid_shape, kinds).items():
                pixels.setdefault(kind, []).append(maps)
    activations = {k: {s: torch.cat(m) for s, m in by.items()} for k, by in activations.items()}
    attention = {name: torch.cat(maps) for name, maps in attention.items()}
    return activations, attention, {kind: torch.cat(maps) for kind, maps in pixels.items()}, grids


def display_images(examples: list[dict], grid_shape) -> list:
    """What the maps are drawn over: the image, or a video's middle frame (the maps show the middle tubelets)."""
    from PIL import Image

    pictures = []
    for example in examples:
        if "image" in example:
            pictures.append(example["image"].convert("RGB"))
        elif "video" in example and not isinstance(example["video"], str):
            clip = np.asarray(example["video"], dtype=np.uint8)
            pictures.append(Image.fromarray(clip[len(clip) // 2]))
        else:
            pictures.append(Image.new("RGB", (grid_shape[-1] * 8, grid_shape[-2] * 8), "grey"))
    return pictures


def plot_maps(examples, grids, columns: dict, path, masks=None, title: str = "") -> None:
    """Draw the maps: over the images for a 2-D grid, over the middle frames for tubelets, as coloured points for a set."""

    grid_shape = grids[0].grid_shape
    if len(grid_shape) == 1:
        positions = torch.cat([g.positions for g in grids])[: len(next(iter(columns.values())))]
        plot_set_maps(positions, columns, path, title=title)
        return
    if len(grid_shape) == 3:  # tubelets: the middle time slice
        columns = {name: maps[:, maps.shape[1] // 2] for name, maps in columns.items()}
    shown = len(next(iter(columns.values())))
    plot_activation_grid(display_images(examples[:shown], grid_shape), columns, path,
                         masks=masks[:shown] if masks else None, title=title)


def model_label(path: str, model) -> str:
    """A short name for tables: the folder name and the block variant."""
    return f"{Path(path).resolve().name} ({model.config.variant})"

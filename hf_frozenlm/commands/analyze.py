"""`hf-frozenlm analyze`: token activation maps, CLS attention and pseudo-mask mIoU for saved models.

    hf-frozenlm analyze --model runs/digits --baseline runs/digits-baseline \\
        --dataset masked-digits --mask_column mask --out analysis/
    hf-frozenlm analyze --model runs/digits --images a.png b.png --out analysis/

Writes maps_<kind>.png (one row per image: each model's stage maps and CLS attention overlaid) and, when
masks are given, miou.csv and miou.md (mIoU per model x stage x kind, plus CLS attention, plus two references:
uniform random maps and the raw input patches).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-frozenlm analyze",
        description="Information-filtering analysis (paper section 4): token activation maps at each stage around "
        "the frozen LLM block, CLS attention, and pseudo-mask mIoU against object masks.",
    )
    parser.add_argument("--model", required=True, help="saved model folder (save_pretrained output)")
    parser.add_argument("--baseline", help="a second saved model to compare with, e.g. the same trunk without the block")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", help="image files or folders of images (maps only, no mIoU)")
    source.add_argument("--dataset", help="'masked-digits' (builtin, offline), a datasets folder saved with "
                        "save_to_disk, or a Hub dataset name (needs it cached when offline)")
    parser.add_argument("--mask_column", help="dataset column holding object masks (non-zero = object)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--split", default="validation", help="split of a Hub/DatasetDict dataset (default validation; "
                        "falls back to the only split if there is one)")
    parser.add_argument("--num_images", type=int, default=256, help="images scored for mIoU (default 256)")
    parser.add_argument("--grid_images", type=int, default=6, help="images shown in the PNG grids (default 6)")
    parser.add_argument("--kinds", nargs="+", default=["magnitude", "frequency"], choices=["magnitude", "frequency"])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the builtin masked-digits set")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def load_model_and_processor(path: str):
    """A saved model (through the Auto classes hf_frozenlm registers) and the image processor to feed it."""
    import hf_frozenlm  # noqa: F401  (registers the model classes with the Auto classes)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(path)
    model.eval()
    if Path(path, "preprocessor_config.json").exists():
        processor = AutoImageProcessor.from_pretrained(path)
    else:
        # No processor saved beside the model: the one training would have saved (trunk size, mean = std = 0.5).
        from hf_frozenlm.processing import image_processor_for

        processor = image_processor_for(model.config)
        print(f"[analyze] {path} has no preprocessor_config.json; using the package's default processor "
              f"({processor.size['height']} px, mean = std = 0.5).", file=sys.stderr)
    if getattr(processor, "do_center_crop", False):
        print("[analyze] warning: the processor center-crops; masks are resized from the full image, so the "
              "mIoU is measured against slightly shifted masks.", file=sys.stderr)
    return model, processor


def model_label(path: str, model) -> str:
    """A short name for tables: the folder name and the block variant."""
    return f"{Path(path).resolve().name} ({model.config.variant})"


def load_inputs(args) -> tuple[list, list | None]:
    """(PIL images, masks as bool arrays or None) from --images or --dataset."""
    from PIL import Image

    if args.images:
        paths = []
        for item in args.images:
            item = Path(item)
            if item.is_dir():
                paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            else:
                paths.append(item)
        if not paths:
            raise SystemExit("hf-frozenlm analyze: no images found in " + " ".join(args.images))
        return [Image.open(p).convert("RGB") for p in paths[: args.num_images]], None

    if args.dataset == "masked-digits":
        from hf_frozenlm.builtin_masked import load_masked_digits

        dataset = load_masked_digits(num_images=args.num_images, seed=args.seed)
        mask_column = args.mask_column or "mask"
    else:
        import datasets

        if Path(args.dataset).is_dir():
            dataset = datasets.load_from_disk(args.dataset)
        else:
            dataset = datasets.load_dataset(args.dataset)
        if isinstance(dataset, datasets.DatasetDict):
            split = args.split if args.split in dataset else next(iter(dataset)) if len(dataset) == 1 else None
            if split is None:
                raise SystemExit(f"hf-frozenlm analyze: split {args.split!r} not in {list(dataset)}; pass --split.")
            dataset = dataset[split]
        mask_column = args.mask_column
        dataset = dataset.select(range(min(args.num_images, len(dataset))))
    for column in (args.image_column, mask_column):
        if column is not None and column not in dataset.column_names:
            raise SystemExit(f"hf-frozenlm analyze: no column {column!r}; columns: {dataset.column_names}.")
    images = [image.convert("RGB") for image in dataset[args.image_column]]
    masks = None
    if mask_column is not None:
        masks = [np.asarray(mask.convert("L") if hasattr(mask, "convert") else mask) != 0 for mask in dataset[mask_column]]
    return images, masks


def analyse_model(model, processor, images, batch_size: int, kinds) -> tuple[dict, dict, dict]:
    """Over all images, batch by batch: (kind -> stage -> (N, H, W) maps, name -> (N, H, W) CLS attention,
    kind -> (N, H, W) maps of the raw input patches as this model's processor and grid see them)."""
    from hf_frozenlm.analysis import attention_maps, pixel_activations, token_activations_all, token_grid

    activations, attention, pixels = {}, {}, {}
    for start in range(0, len(images), batch_size):
        pixel_values = processor(images[start : start + batch_size], return_tensors="pt")["pixel_values"]
        for kind, by_stage in token_activations_all(model, pixel_values, kinds=kinds).items():
            for stage, maps in by_stage.items():
                activations.setdefault(kind, {}).setdefault(stage, []).append(maps)
        for name, maps in attention_maps(model, pixel_values).items():
            attention.setdefault(name, []).append(maps)
        grid_shape = token_grid(model, pixel_values).grid_shape
        for kind, maps in pixel_activations(pixel_values, grid_shape, kinds).items():
            pixels.setdefault(kind, []).append(maps)
    activations = {k: {s: torch.cat(m) for s, m in by.items()} for k, by in activations.items()}
    attention = {name: torch.cat(maps) for name, maps in attention.items()}
    return activations, attention, {kind: torch.cat(maps) for kind, maps in pixels.items()}


def main(argv: list[str]) -> int:
    from hf_frozenlm.analysis import miou_rows, plot_activation_grid, write_miou_table

    args = build_parser().parse_args(argv)
    if args.dataset and args.dataset != "masked-digits" and not args.mask_column:
        print("[analyze] no --mask_column: writing maps only, no mIoU table.", file=sys.stderr)
    torch.manual_seed(0)
    images, masks = load_inputs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    models = [(args.baseline, "baseline"), (args.model, "model")] if args.baseline else [(args.model, "model")]
    results = []  # (label, activations, attention)
    pixels = None
    for path, _role in models:
        model, processor = load_model_and_processor(path)
        activations, attention, model_pixels = analyse_model(model, processor, images, args.batch_size, args.kinds)
        results.append((model_label(path, model), activations, attention))
        pixels = pixels or model_pixels  # the reference is taken at the first model's resolution and grid
        del model

    shown = min(args.grid_images, len(images))
    for kind in args.kinds:
        columns = {}
        for label, activations, attention in results:
            short = label.rsplit(" (", 1)[-1].rstrip(")")  # the variant keeps column titles short
            for stage, maps in activations[kind].items():
                columns[f"{short}: {stage}"] = maps[:shown]
            for name, maps in attention.items():
                columns[f"{short}: {name} CLS attn"] = maps[:shown]
        path = out / f"maps_{kind}.png"
        plot_activation_grid(images[:shown], columns, path, masks=masks[:shown] if masks else None,
                             title=f"token {kind} maps (" + " vs ".join(label for label, _, _ in results) + ")")
        print(f"[analyze] wrote {path}")

    if masks is not None:
        # References first: uniform noise (what a map that knows nothing scores under the best-threshold rule)
        # and the raw input patches (the low-level cue the features should beat).
        grid_shape = tuple(pixels[args.kinds[0]].shape[1:])
        noise = torch.rand(len(images), *grid_shape, generator=torch.Generator().manual_seed(0))
        rows = miou_rows("random maps (chance)", {"-": {"uniform noise": noise}}, {}, masks)
        rows += miou_rows("input pixels (no model)", {kind: {"patches": pixels[kind]} for kind in args.kinds}, {}, masks)
        for label, activations, attention in results:
            rows += miou_rows(label, activations, attention, masks)
        markdown = write_miou_table(rows, out / "miou.csv", out / "miou.md")
        print(markdown, end="")
        scored = rows[0]["images"]
        print(f"[analyze] wrote {out / 'miou.csv'} and {out / 'miou.md'} ({scored} of {len(images)} images scored; "
              "the others' masks cover no token of the grid)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`hf-frozenlm analyze`: token activation maps, CLS attention and pseudo-mask mIoU for saved models of any task whose
tokens form a grid or a set (image patches, video tubelets, point groups).

    hf-frozenlm analyze --model runs/digits --baseline runs/digits-baseline \\
        --dataset masked-digits --mask_column mask --out analysis/
    hf-frozenlm analyze --model runs/digits --images a.png b.png --out analysis/
    hf-frozenlm analyze --model runs/moving-shapes-videomae-tiny-llm --out analysis/    # the run's own test clips

Writes maps_<kind>.png (one row per example: each model's stage maps and CLS attention) and, when image masks are
given, miou.csv and miou.md (mIoU per model x stage x kind, plus CLS attention, plus two references: uniform random
maps and the raw input patches).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import CommandParser


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="hf-frozenlm analyze",
        description="Information-filtering analysis (paper section 4): token activation maps at each stage around "
        "the frozen LLM block, CLS attention, and pseudo-mask mIoU against object masks.",
    )
    parser.add_argument("--model", required=True, help="saved model folder (save_pretrained output)")
    parser.add_argument("--baseline", help="a second saved model of the same task, e.g. the plain trunk (variant none)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", nargs="+", help="image files or folders of images (image models; maps only)")
    source.add_argument("--dataset", help="'masked-digits' (builtin with masks), a datasets folder saved with "
                        "save_to_disk, a Hub dataset name, or any --dataset the task's training takes (default: the "
                        "run's own dataset, its test split)")
    parser.add_argument("--mask_column", help="dataset column holding object masks (non-zero = object)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--split", default="validation", help="split of a Hub/DatasetDict dataset with masks")
    parser.add_argument("--num_images", type=int, default=256, help="examples analysed (default 256)")
    parser.add_argument("--grid_images", type=int, default=6, help="examples shown in the PNG grids (default 6)")
    parser.add_argument("--kinds", nargs="+", default=["magnitude", "frequency"], choices=["magnitude", "frequency"])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the builtin masked-digits set")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def main(argv: list[str]) -> int:
    from ..analysis.maps import miou_rows, reference_miou_rows, write_miou_table
    from ..analysis.report import analyse_model, image_examples, model_label, plot_maps, task_examples
    from ..errors import UsageError
    from ..training.loading import load_trained_model

    args = build_parser().parse_args(argv)
    if args.num_images < 1 or args.grid_images < 1 or args.batch_size < 1:
        raise UsageError("--num_images, --grid_images and --batch_size must be 1 or more.")
    torch.manual_seed(0)
    task, model, processor = load_trained_model(args.model)
    models = [(args.model, model, processor)]
    if args.baseline:
        baseline_task, baseline, baseline_processor = load_trained_model(args.baseline)
        if baseline_task.name != task.name:
            raise UsageError(f"--baseline holds a {baseline_task.name} model; --model holds {task.name}.")
        models.insert(0, (args.baseline, baseline, baseline_processor))
    image_task = task.name == "image-classification"
    if (args.images or args.mask_column or args.dataset == "masked-digits") and not image_task:
        raise UsageError(f"--images, --mask_column and masked-digits are for image models; {args.model} is {task.name}.")
    masks = None
    if image_task and (args.images or args.dataset):
        examples, masks = image_examples(args.images, args.dataset, args.mask_column, args.image_column, args.split,
                                         args.num_images, args.seed)
    else:
        examples = task_examples(task, args.model, args.dataset, args.num_images)
    if args.dataset and image_task and not args.mask_column and args.dataset != "masked-digits":
        print("[analyze] no --mask_column: writing maps only, no mIoU table.", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results, pixels, grids = [], None, None
    for path, loaded, loaded_processor in models:
        activations, attention, model_pixels, model_grids = analyse_model(task, loaded, loaded_processor, examples,
                                                                          args.batch_size, args.kinds)
        results.append((model_label(path, loaded), activations, attention))
        pixels = pixels or model_pixels  # the reference is taken at the first model's resolution and grid
        grids = grids or model_grids

    shown = min(args.grid_images, len(examples))
    for kind in args.kinds:
        columns = {}
        for label, activations, attention in results:
            short = label.rsplit(" (", 1)[-1].rstrip(")")  # the variant keeps column titles short
            for stage, maps in activations[kind].items():
                columns[f"{short}: {stage}"] = maps[:shown]
            for name, maps in attention.items():
                columns[f"{short}: {name} CLS attn"] = maps[:shown]
        path = out / f"maps_{kind}.png"
        plot_maps(examples, grids, columns, path, masks=masks,
                  title=f"token {kind} maps (" + " vs ".join(label for label, _, _ in results) + ")")
        print(f"[analyze] wrote {path}")

    if masks is not None:
        rows = reference_miou_rows({kind: pixels[kind] for kind in args.kinds}, masks)  # references first
        for label, activations, attention in results:
            rows += miou_rows(label, activations, attention, masks)
        markdown = write_miou_table(rows, out / "miou.csv", out / "miou.md")
        print(markdown, end="")
        print(f"[analyze] wrote {out / 'miou.csv'} and {out / 'miou.md'} ({rows[0]['images']} of {len(examples)} "
              "images scored; the others' masks cover no token of the grid)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`hf-frozenlm merge --adapter DIR --output_dir OUT`: fold LoRA adapters into a plain model (no peft needed to load).

Works for a LoRA run of any task; the merged folder gets the run's processor, metrics, run config and a card.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from . import CommandParser


def main(argv: list[str]) -> int:
    from ..errors import RunFolderError, UsageError
    from ..hub.cards import build_model_card
    from ..training.loading import load_trained_model
    from ..training.lora import merge_lora

    parser = CommandParser(prog="hf-frozenlm merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="a LoRA run folder written by `hf-frozenlm train --lora_r N`")
    parser.add_argument("--output_dir", "--output-dir", required=True, help="where to write the merged model")
    parser.add_argument("--overwrite_output_dir", "--overwrite-output-dir", action="store_true",
                        help="write into an existing, non-empty folder")
    args = parser.parse_args(argv)

    if not os.path.isfile(os.path.join(args.adapter, "adapter_config.json")):
        raise RunFolderError(f"{args.adapter!r} holds no adapter_config.json; it is not a LoRA run folder.")
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite_output_dir:
        raise UsageError(f"{args.output_dir!r} exists and is not empty; pass --overwrite_output_dir.")
    task, peft_model, processor = load_trained_model(args.adapter)
    model = merge_lora(peft_model)
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    metrics, run_config = {}, {}
    for name in ("metrics.json", "run_config.json", "training_curves.png"):
        source = os.path.join(args.adapter, name)
        if os.path.isfile(source):
            shutil.copy(source, args.output_dir)
    if os.path.isfile(os.path.join(args.adapter, "metrics.json")):
        with open(os.path.join(args.adapter, "metrics.json"), encoding="utf-8") as handle:
            metrics = json.load(handle)
    if os.path.isfile(os.path.join(args.adapter, "run_config.json")):
        with open(os.path.join(args.adapter, "run_config.json"), encoding="utf-8") as handle:
            run_config = json.load(handle)
    card = build_model_card(task, model.config, metrics=metrics, run_config=run_config, load_path=args.output_dir,
                            curves=os.path.isfile(os.path.join(args.output_dir, "training_curves.png")))
    card.save(os.path.join(args.output_dir, "README.md"))
    print(f"Merged model ({task.name}) written to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

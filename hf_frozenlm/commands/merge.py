"""`hf-frozenlm merge --adapter DIR --output_dir OUT`: fold LoRA adapters into a plain model (no peft needed to load)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def main(argv: list[str]) -> int:
    from ..model_card import build_model_card
    from ..training import load_trained_model

    parser = argparse.ArgumentParser(prog="hf-frozenlm merge", description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", required=True, help="A LoRA run folder written by `hf-frozenlm train --lora_r N`.")
    parser.add_argument("--output_dir", "--output-dir", required=True, help="Where to write the merged model.")
    parser.add_argument("--overwrite_output_dir", "--overwrite-output-dir", action="store_true",
                        help="Write into an existing, non-empty folder.")
    args = parser.parse_args(argv)

    if not os.path.isfile(os.path.join(args.adapter, "adapter_config.json")):
        print(f"hf-frozenlm merge: {args.adapter!r} holds no adapter_config.json; it is not a LoRA run folder.",
              file=sys.stderr)
        return 2
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite_output_dir:
        print(f"hf-frozenlm merge: {args.output_dir!r} exists and is not empty; pass --overwrite_output_dir.",
              file=sys.stderr)
        return 2
    peft_model, processor = load_trained_model(args.adapter)
    lora = peft_model.peft_config["default"]
    model = peft_model.merge_and_unload()
    # Provenance: the LLM tensors are no longer the ones whose sha256 llm_source records.
    source = dict(model.config.llm_source or {})
    source["lora_merged"] = {"r": lora.r, "lora_alpha": lora.lora_alpha,
                             "target_modules": sorted(lora.target_modules) if not isinstance(lora.target_modules, str)
                             else lora.target_modules}
    model.config.llm_source = source
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    metrics = None
    metrics_file = os.path.join(args.adapter, "metrics.json")
    if os.path.isfile(metrics_file):
        shutil.copy(metrics_file, args.output_dir)
        with open(metrics_file, encoding="utf-8") as handle:
            metrics = json.load(handle)
    dataset = None
    run_config = os.path.join(args.adapter, "run_config.json")
    if os.path.isfile(run_config):
        shutil.copy(run_config, args.output_dir)
        with open(run_config, encoding="utf-8") as handle:
            dataset = json.load(handle).get("data", {}).get("dataset")
    card = build_model_card(
        model.config, metrics=metrics, dataset_name=dataset, model_name=os.path.basename(os.path.abspath(args.output_dir)),
        training_summary={"LoRA": f"rank {lora.r}, alpha {lora.lora_alpha}, merged from {args.adapter}"},
    )
    card.save(os.path.join(args.output_dir, "README.md"))
    print(f"Merged model written to {args.output_dir}")
    return 0

"""Benchmark 4: numerics of the fast paths on the digits test set (bf16 frozen block versus fp32).

The model: the newest trained digits run under runs/ (a folder `hf-frozenlm train` wrote, holding config.json,
weights and preprocessor_config.json), or, when there is none (or with --train), a small model trained here with
a plain AdamW loop: the main job's shape (ViT-Tiny sized for 8x8 digits: patch 2, 4 layers) + SmolLM2-135M's last
layer, fp32. The test split is hf_frozenlm.data.images.digits_dataset()["test"] (seeded, the same one the CLI uses).

Rows: the fp32 model (reference), the same weights with llm_dtype="bfloat16" (the block stored and computed in
bf16), and that plus bf16 autocast for the trunk. Columns: test accuracy, top-1 agreement with the fp32 model,
and the largest relative logit difference, max over images of max_c |l_c - l_c(fp32)| / max_c |l_c(fp32)|.

Run:  python benchmarks/bench_numerics.py            (uses runs/ if a trained run is there)
      python benchmarks/bench_numerics.py --train    (always trains its own small model, ~2 min)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import bench_common as bc  # noqa: E402  (sets threads before torch is imported)
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def find_run(runs: Path) -> Path | None:
    """The newest folder under runs/ holding a saved hf_frozenlm model with a preprocessor config."""
    candidates = []
    for config in list(runs.glob("*/config.json")) + list(runs.glob("*/*/config.json")):
        try:
            fields = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        folder = config.parent
        if "llm_config" in fields and fields.get("variant", "llm") == "llm" and (folder / "preprocessor_config.json").is_file():
            if any(folder.glob("*.safetensors")):
                candidates.append(folder)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def digits_tensors(split, processor=None):
    """(pixel_values, labels) of a digits split, through the run's image processor or a plain [-1, 1] scaling."""
    images = [image.convert("RGB") for image in split["image"]]
    labels = torch.tensor(split["label"])
    if processor is not None:
        return processor(images=images, return_tensors="pt")["pixel_values"], labels
    pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) for image in images]))  # (N, 8, 8, 3)
    return pixels.permute(0, 3, 1, 2) / 127.5 - 1.0, labels


def train_small_model(splits, epochs: int, tiny: bool):
    """The main job's model shape, trained with a plain loop (AdamW, cosine, batch 64) on the digits train split."""
    from hf_frozenlm import ViTLlamaForImageClassification

    torch.manual_seed(0)
    model = ViTLlamaForImageClassification.from_parts(
        "vit-tiny", "smollm2-135m", num_labels=10,
        trunk_kwargs=dict(image_size=8, patch_size=2, num_hidden_layers=2 if tiny else 4))
    pixels, labels = digits_tensors(splits["train"])
    if tiny:
        pixels, labels = pixels[:128], labels[:128]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.05)
    steps = epochs * ((len(labels) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), 64):
            index = order[start:start + 64]
            loss = model(pixels[index], labels=labels[index]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval(), None


def with_bf16_block(model):
    """A copy of `model` whose frozen block is stored and computed in bf16 (the llm_dtype="bfloat16" path)."""
    fast = copy.deepcopy(model)
    fast.config.llm_dtype = "bfloat16"
    for block in fast.frozen_lm_blocks():
        block.llm_dtype = torch.bfloat16
        block.enforce_llm_policy()
    return fast.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a trained run folder (default: the newest under runs/)")
    parser.add_argument("--train", action="store_true", help="train a small model here even if runs/ has one")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the fallback training loop")
    parser.add_argument("--tiny", action="store_true", help="smoke test: 1 epoch on 128 images")
    args = parser.parse_args(argv)
    from hf_frozenlm.data.images import digits_dataset

    device = torch.device("cpu")  # logits are compared on one device; CUDA would change the fp32 reference too
    print(bc.machine_line(device), file=sys.stderr)
    splits = digits_dataset()
    run = Path(args.run) if args.run else (None if args.train else find_run(REPO / "runs"))
    start = time.perf_counter()
    if run is not None:
        from transformers import AutoImageProcessor

        from hf_frozenlm import ViTLlamaForImageClassification

        model = ViTLlamaForImageClassification.from_pretrained(run, dtype=torch.float32).eval()
        model.enforce_llm_policy()
        processor = AutoImageProcessor.from_pretrained(run)
        source = f"trained run `{run.relative_to(REPO) if run.is_relative_to(REPO) else run}`"
        if model.config.llm_dtype != "float32":
            model = copy.deepcopy(model)
            model.config.llm_dtype = "float32"
            for block in model.frozen_lm_blocks():
                block.llm_dtype = torch.float32
                block.enforce_llm_policy()
    else:
        epochs = 1 if args.tiny else args.epochs
        model, processor = train_small_model(splits, epochs, args.tiny)
        source = f"a small model trained by this script ({epochs} epochs, plain AdamW loop; no run folder was used)"
    print(f"model ready in {time.perf_counter() - start:.0f} s: {source}", file=sys.stderr)

    pixels, labels = digits_tensors(splits["test"], processor)
    fast = with_bf16_block(model)
    with torch.inference_mode():
        reference = model(pixels).logits.float()
        variants = {
            "fp32 (reference)": reference,
            'llm_dtype="bfloat16"': fast(pixels).logits.float(),
        }
        with torch.autocast("cpu", dtype=torch.bfloat16):
            variants['llm_dtype="bfloat16" + bf16 autocast trunk'] = fast(pixels).logits.float()
    rows = []
    for name, logits in variants.items():
        relative = ((logits - reference).abs().amax(-1) / reference.abs().amax(-1)).max()
        rows.append([name, f"{100 * (logits.argmax(-1) == labels).float().mean():.2f}%",
                     f"{100 * (logits.argmax(-1) == reference.argmax(-1)).float().mean():.2f}%",
                     f"{float(relative):.2e}"])
    print(f"\n### Numerics on the digits test set ({len(labels)} images)\n")
    print(f"Model: {source}. CPU.\n")
    print(bc.markdown_table(["block path", "test accuracy", "top-1 agreement with fp32", "max relative logit diff"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark 5: can the CPU feed the GPUs? Images per second per DataLoader worker for DeiT's full training transform
at 224 px, and the workers one GPU needs for ViT-S + a LLaMA-7B block.

Images: ImageNet-sized JPEGs generated here (default 500x375, ImageNet's most common size) from smooth colour
gradients, random ellipses and rectangles, and Gaussian noise (sd 18), saved at quality 90: about 100 KB each, like
ImageNet's ~110 KB average, so decoding does realistic entropy-decoding work. A second set of 2000x1500 "phone
photos" shows where draft decoding pays.

Transforms (through the real `ImageCollator`): "deit-train" is what `hf-frozenlm train --recipe deit` runs in each
worker: JPEG decode (optionally at reduced size: PIL draft mode, keeping enough pixels for the smallest crop, i.e.
224 / sqrt(0.08) = 792 px a side), random resized crop (area 0.08-1, bilinear) and flip, RandAugment
rand-m9-mstd0.5-inc1, the ViT image processor (resize to 224, scale, normalise), random erasing 0.25, batches of 64
float32 tensors. "eval" decodes (draft: down to 224 px a side) and runs the processor only.

Workers per GPU = GPU training throughput / images per second of one worker. No GPU was available to this benchmark:
the GPU throughput is an estimate, stated with its source in the output (FLOPs per training image from
bench_train_step.py's formula, over an assumed fraction of the GPU's peak).

Run:  python benchmarks/bench_dataloader.py               (~3 min on 2 cores)
      python benchmarks/bench_dataloader.py --tiny   (quick check: 8 images, 1 batch)
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import bench_common  # noqa: F401  (threads and offline mode before torch is imported)
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# ViT-S/16 at 224 px + LLaMA-7B's last layer, training FLOPs per image (bench_train_step.py's count: T = 197 tokens,
# trunk and projections x3 for forward + both backward passes, the frozen block x2 for forward + input gradients).
T, d, L, D, F_, P = 197, 384, 12, 4096, 11008, 16
TRUNK_FLOPS = 2 * (T - 1) * 3 * P * P * d + L * (2 * T * 12 * d * d + 4 * T * T * d) + 4 * T * d * D
BLOCK_FLOPS = 2 * T * (4 * D * D + 3 * D * F_) + 4 * T * T * D
TRAIN_FLOPS_PER_IMAGE = 3 * TRUNK_FLOPS + 2 * BLOCK_FLOPS
# Dense bf16 peaks from the vendors' data sheets; 40 % of peak (MFU) is an assumption typical of well-tuned
# transformer training at this size, not a measurement.
GPUS = {"A100 (312 TFLOP/s bf16)": 312e12, "H100 SXM (989 TFLOP/s bf16)": 989e12}
ASSUMED_MFU = 0.40


def synthetic_photo(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A JPEG (quality 90) with gradients, shapes and noise: the entropy of a photo, not of a flat test card."""
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    base = np.stack([rng.uniform(40, 200) + rng.uniform(-80, 80) * x, rng.uniform(40, 200) + rng.uniform(-80, 80) * y,
                     rng.uniform(40, 200) + rng.uniform(-60, 60) * (x + y)], -1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        box = sorted(rng.uniform(0, width, 2)), sorted(rng.uniform(0, height, 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([box[0][0], box[1][0], box[0][1], box[1][1]], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 18, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_examples(count: int, width: int, height: int, folder: str) -> list[dict]:
    """JPEG files on disk (read as the datasets Image feature's undecoded {"bytes", "path"} values would be)."""
    rng = np.random.default_rng(0)
    examples = []
    for index in range(count):
        path = os.path.join(folder, f"{width}x{height}-{index:04d}.jpg")
        with open(path, "wb") as handle:
            handle.write(synthetic_photo(width, height, rng))
        examples.append({"image": {"bytes": None, "path": path}, "label": 0, "example_id": index})
    return examples


def collator_for(transform: str, draft: bool):
    """The training collator of `--recipe deit`, or the evaluation collator (resize only), at 224 px."""
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from hf_frozenlm.data.images import ImageAugmentation, RandomResizedCropFlip
    from hf_frozenlm.data.rand_augment import parse_rand_augment
    from hf_frozenlm.data.random_erasing import RandomErasing
    from hf_frozenlm.data.randomness import ExampleRandomness
    from hf_frozenlm.tasks.image_classification import ImageCollator

    processor = ViTImageProcessorPil(size={"height": 224, "width": 224})
    if transform == "eval":
        return ImageCollator(processor, draft_size=224 if draft else None)
    augment = ImageAugmentation(RandomResizedCropFlip(224, scale=(0.08, 1.0)),
                                parse_rand_augment("rand-m9-mstd0.5-inc1", fill=(128, 128, 128)), RandomErasing(0.25))
    draft_size = augment.draft_size(224) if draft else None
    return ImageCollator(processor, augment, ExampleRandomness(0), draft_size=draft_size)


def images_per_second(examples: list[dict], transform: str, workers: int, draft: bool, batches: int,
                      batch_size: int = 64) -> float:
    """Throughput of a DataLoader (batch 64) over the examples, after one warm-up batch per worker."""
    import torch
    from torch.utils.data import DataLoader

    collator = collator_for(transform, draft)
    dataset = [examples[i % len(examples)] for i in range((batches + max(workers, 1)) * batch_size)]
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collator,
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    iterator = iter(loader)
    for _ in range(max(workers, 1)):  # warm-up: workers started, first batches decoded
        next(iterator)
    start = time.perf_counter()
    count = 0
    for batch in iterator:
        assert batch["pixel_values"].shape[1:] == torch.Size([3, 224, 224])
        count += batch["pixel_values"].shape[0]
    return count / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128, help="distinct JPEGs per size")
    parser.add_argument("--batches", type=int, default=6, help="timed batches of 64 per configuration")
    parser.add_argument("--large-images", type=int, default=None, help="distinct 2000x1500 JPEGs (0: skip that set)")
    parser.add_argument("--tiny", action="store_true", help="8 images, 1 batch, no large set (the smoke test)")
    options = parser.parse_args(argv)
    if options.tiny:
        options.images, options.batches, options.large_images = 8, 1, 0
    print(bench_common.machine_line())
    with tempfile.TemporaryDirectory() as folder:
        large = options.large_images if options.large_images is not None else max(options.images // 4, 8)
        sets = {"500x375": make_examples(options.images, 500, 375, folder)}
        if large:
            sets["2000x1500"] = make_examples(large, 2000, 1500, folder)
        sizes = {name: np.mean([os.path.getsize(e["image"]["path"]) for e in examples]) / 1024
                 for name, examples in sets.items()}
        rows = []
        configurations = {"500x375": [("deit-train", 1, False), ("deit-train", 1, True), ("deit-train", 2, False),
                                      ("deit-train", 2, True), ("eval", 1, False), ("eval", 1, True)],
                          "2000x1500": [("deit-train", 1, False), ("deit-train", 1, True), ("eval", 1, False),
                                        ("eval", 1, True)]}
        for name, examples in sets.items():
            for transform, workers, draft in configurations[name]:
                rate = images_per_second(examples, transform, workers, draft, options.batches)
                rows.append((name, sizes[name], transform, workers, draft, rate, rate / workers))
    print("\n| images | mean file size | transform | workers | draft decoding | images/s | images/s per worker |")
    print("|---|---|---|---|---|---|---|")
    for name, size, transform, workers, draft, rate, per_worker in rows:
        print(f"| {name} JPEG q90 | {size:.0f} KB | {transform} | {workers} | {'on' if draft else 'off'} | "
              f"{rate:.0f} | {per_worker:.0f} |")
    per_worker = max(row[6] for row in rows if row[0] == "500x375" and row[2] == "deit-train" and row[3] == 1)
    print(f"\nTraining FLOPs per image, ViT-S/16 224 px + LLaMA-7B block: {TRAIN_FLOPS_PER_IMAGE / 1e9:.0f} GFLOP "
          f"(trunk + projections {3 * TRUNK_FLOPS / 1e9:.0f}, frozen block {2 * BLOCK_FLOPS / 1e9:.0f}).")
    print(f"\n| GPU | assumed training images/s (at {ASSUMED_MFU:.0%} of peak) | workers needed at "
          f"{per_worker:.0f} images/s per worker |")
    print("|---|---|---|")
    for gpu, peak in GPUS.items():
        rate = ASSUMED_MFU * peak / TRAIN_FLOPS_PER_IMAGE
        print(f"| {gpu} | {rate:.0f} | {int(np.ceil(rate / per_worker))} |")


if __name__ == "__main__":
    main()

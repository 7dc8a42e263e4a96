"""`hf-frozenlm predict --model DIR IMAGE...`: the top-k labels of each image (text, or JSON with --json)."""

from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv: list[str]) -> int:
    from PIL import Image, UnidentifiedImageError

    from ..data import to_rgb
    from ..training import load_trained_model, unwrap

    parser = argparse.ArgumentParser(prog="hf-frozenlm predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="A folder written by `hf-frozenlm train` or `merge`.")
    parser.add_argument("images", nargs="+", help="Image files.")
    parser.add_argument("--top_k", "--top-k", type=int, default=5, help="How many labels per image.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    args = parser.parse_args(argv)

    try:
        model, processor = load_trained_model(args.model)
    except (ValueError, OSError) as error:
        print(f"hf-frozenlm predict: {error}", file=sys.stderr)
        return 2
    id2label = unwrap(model).config.id2label
    images = []
    for path in args.images:
        try:
            with Image.open(path) as image:
                # Same conversion as training: transparent pixels become white paper.
                # .copy() reads the pixels before the file closes (to_rgb returns RGB images as they are).
                images.append(to_rgb(image).copy())
        except (OSError, UnidentifiedImageError) as error:
            print(f"hf-frozenlm predict: cannot read {path}: {error}", file=sys.stderr)
            return 2
    with torch.no_grad():
        logits = model(pixel_values=processor(images, return_tensors="pt")["pixel_values"]).logits
    probabilities = logits.float().softmax(-1)
    top = probabilities.topk(min(args.top_k, probabilities.shape[-1]), dim=-1)
    results = [
        {"image": path, "predictions": [{"label": id2label[int(i)], "score": round(float(s), 6)}
                                        for s, i in zip(scores, indices)]}
        for path, scores, indices in zip(args.images, top.values, top.indices)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["image"])
            for rank, prediction in enumerate(result["predictions"], 1):
                print(f"  {rank}. {prediction['label']:<20} {prediction['score']:.4f}")
    return 0

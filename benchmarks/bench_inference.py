"""Benchmark 3: inference throughput and latency of ViT-S with and without a frozen LLM block.

Models (random weights except the SmolLM2 layer, which is read from the offline GGUF; 224 px, 1000 classes):
  ViT-S alone                  variant="none"
  ViT-S + SmolLM2 last block   llm="smollm2-135m" (the demo's block shape: width 576, 9 heads, FFN 1536), fp32
  ViT-S + SmolLM2, bf16 block  the same with llm_dtype="bfloat16"
  ViT-S + LLaMA-7B block fp32  LlamaConfig with 7B layer shapes, 1 layer, llm_dtype="float32"
  ViT-S + LLaMA-7B block bf16  the same with llm_dtype="bfloat16"
Measured under torch.inference_mode: images/s at batch 1 and 32 (batch / median call time) and the p50 / p95
latency of batch-1 calls. All models are built first and measured round-robin (one call of each model per round),
so a burst of load from other jobs on shared cores hits every model alike and the ratios stay side by side.
On CUDA the trunk also runs under bf16 autocast.

Run:  python benchmarks/bench_inference.py      (~4 min on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import sys
import time

import bench_common as bc  # noqa: E402  (sets threads before torch is imported)
import torch

MODELS = {
    "vit": "ViT-S alone",
    "smol": "ViT-S + SmolLM2 last block (fp32)",
    "smol-bf16": "ViT-S + SmolLM2 last block (bf16)",
    "7b-fp32": "ViT-S + LLaMA-7B-shaped block (fp32)",
    "7b-bf16": "ViT-S + LLaMA-7B-shaped block (bf16)",
}


def build(name: str, tiny: bool, device: torch.device):
    from transformers import LlamaConfig

    from hf_frozenlm import ViTLlamaForImageClassification

    torch.manual_seed(0)
    trunk = dict(image_size=32, num_hidden_layers=2) if tiny else {}
    if name == "vit":
        model = ViTLlamaForImageClassification.from_parts("vit-small", None, variant="none", num_labels=1000, trunk_kwargs=trunk)
    elif name.startswith("smol"):
        model = ViTLlamaForImageClassification.from_parts(
            "vit-small", "smollm2-135m", num_labels=1000, trunk_kwargs=trunk,
            llm_dtype="bfloat16" if name.endswith("bf16") else "float32")
    else:
        shape = dict(bc.LLAMA7B, hidden_size=256, intermediate_size=688, num_attention_heads=4, num_key_value_heads=4) if tiny else bc.LLAMA7B
        llm = LlamaConfig(**shape, num_hidden_layers=1)
        model = ViTLlamaForImageClassification.from_parts(
            "vit-small", llm, num_labels=1000, trunk_kwargs=trunk, llm_dtype=name.split("-")[1].replace("bf16", "bfloat16").replace("fp32", "float32"))
    return model.to(device).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--latency-calls", type=int, default=30, help="timed batch-1 calls per model")
    parser.add_argument("--batch-calls", type=int, default=3, help="timed batch-32 calls per model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    args = parser.parse_args(argv)
    device = bc.pick_device(args.device)
    names = args.models.split(",")
    image = 32 if args.tiny else 224
    print(bc.machine_line(device), file=sys.stderr)
    models = {name: build(name, args.tiny, device) for name in names}
    autocast = device.type == "cuda"

    def call(model, pixels):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(pixels).logits

    samples: dict[tuple[str, int], list[float]] = {}
    for batch, calls in ((1, args.latency_calls), (args.batch, args.batch_calls)):
        pixels = torch.randn(batch, 3, image, image, device=device)
        for name, model in models.items():  # warm-up: first calls allocate and pick kernels
            call(model, pixels)
            call(model, pixels)
        for _ in range(calls):
            for name, model in models.items():
                bc.sync(device)
                start = time.perf_counter()
                call(model, pixels)
                bc.sync(device)
                samples.setdefault((name, batch), []).append(time.perf_counter() - start)
        print(f"  batch {batch} done", file=sys.stderr)

    headers = ["model", "img/s, batch 1", f"img/s, batch {args.batch}", "p50 ms, batch 1", "p95 ms, batch 1",
               "p50 / ViT-S p50", f"batch-{args.batch} time / ViT-S"]
    rows = []
    vit1 = bc.median(samples[("vit", 1)]) if "vit" in names else None
    vitb = bc.median(samples[("vit", args.batch)]) if "vit" in names else None
    for name in names:
        one, big = samples[(name, 1)], samples[(name, args.batch)]
        rows.append([MODELS[name], 1 / bc.median(one), args.batch / bc.median(big), 1000 * bc.percentile(one, 50),
                     1000 * bc.percentile(one, 95), bc.median(one) / vit1 if vit1 else None,
                     bc.median(big) / vitb if vitb else None])
    print(f"\n### Inference: ViT-S ({image} px) with and without a frozen block\n")
    print(f"{bc.machine_line(device)}. {args.latency_calls} batch-1 calls and {args.batch_calls} batch-{args.batch} "
          f"calls per model, round-robin, after 2 warm-up calls; torch.inference_mode"
          f"{', bf16 autocast' if autocast else ', fp32 trunk'}.\n")
    print(bc.markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

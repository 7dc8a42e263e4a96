"""Benchmark 2: one training step of ViT-S + a LLaMA-7B-shaped frozen block, batch 8, 224 px (197 tokens).

Configurations (timed round-robin in one process; peak RSS of each from a fresh process of its own):
  (a) reference   benchmarks/reference_vit_llama.py: the official code's computation (hand-written eager
                  attention, Meta's LLaMA block, everything float32)
  (b) ours fp32   ViTLlamaForImageClassification.from_parts("vit-small", LlamaConfig(7B shapes, 1 layer))
  (c) ours bf16   (b) with llm_dtype="bfloat16" (the frozen block stored and computed in bf16, trunk fp32)
  (d) (c) + torch.compile of the whole model
  (e) (c) + activation checkpointing (ViT layers and the LLM layer recompute their activations in backward)
  (f) (c) + bf16 autocast for the trunk (on CUDA, (c)-(e) use it too, as the GPU recipe would)
A step is zero_grad + forward + cross-entropy + backward + AdamW step over the trainable parameters. Random
weights: the shapes set the cost. Timings are the best and median of the timed steps after warm-up rounds.
Peak RSS: a fresh process per configuration builds the model, resets the peak, runs 1 step (which also allocates
the optimizer state) and reads VmHWM: weights + activations + gradients + AdamW state + workspaces.

FLOPs per image, counted by this formula (T = 197 tokens, d = 384 trunk width, L = 12 ViT layers, D = 4096,
F = 11008, P = 16 patch, 3 channels; a multiply-add is 2 FLOPs; norms, softmax and elementwise ops not counted):
  patch embedding  2 * (T-1) * 3*P*P * d
  each ViT layer   2 * T * 12 * d^2  (qkv, out, MLP 4d)   + 4 * T^2 * d  (QK^T and AV)
  proj_in+out      4 * T * d * D
  frozen block     2 * T * (4 * D^2 + 3 * D * F)           + 4 * T^2 * D
  training         3 x forward for the trainable parts (forward, input grads, weight grads),
                   2 x forward for the frozen block (forward, input grads: it has no weight grads)
  Recomputation under activation checkpointing is not counted (model FLOPs, as MFU is usually defined).
MFU = ideal time / measured time, ideal time = trunk FLOPs / fp32 ceiling + block FLOPs / ceiling of the block's
dtype, where each ceiling is the best FLOP/s of one large F.linear (1576 x 4096 x 11008) measured in this run.
"Block matmul efficiency" times the frozen LLM layer alone (forward + input-grad backward, bf16 inputs) and
divides its matmul FLOPs (2 x block forward above) by that time and by the bf16 ceiling.

Run:  python benchmarks/bench_train_step.py            (~6 min on 2 CPU cores)
      python benchmarks/bench_train_step.py --profile  (adds an op-time breakdown of one (c) step)
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import bench_common as bc  # noqa: E402  (sets threads before torch is imported)
import torch

HERE = Path(__file__).resolve()
CONFIGS = {
    "a": "(a) reference: eager attention, all fp32",
    "b": "(b) ours, fp32",
    "c": "(c) ours, llm_dtype=bfloat16",
    "d": "(d) (c) + torch.compile",
    "e": "(e) (c) + activation checkpointing",
    "f": "(f) (c) + bf16 autocast for the trunk",
}


def shapes(tiny: bool) -> dict:
    if tiny:
        return dict(d=64, depth=2, heads=2, image=32, patch=16, D=128, H=4, F=344, classes=10, batch=2)
    return dict(d=384, depth=12, heads=6, image=224, patch=16, D=4096, H=32, F=11008, classes=1000, batch=8)


def flops_per_image(s: dict) -> dict:
    """Forward and training FLOPs per image, split into trainable trunk (+ projections, head) and frozen block."""
    n = (s["image"] // s["patch"]) ** 2
    t, d, depth, big_d, f = n + 1, s["d"], s["depth"], s["D"], s["F"]
    trunk_fwd = (2 * n * 3 * s["patch"] ** 2 * d + depth * (2 * t * 12 * d * d + 4 * t * t * d)
                 + 4 * t * d * big_d + 2 * d * s["classes"])
    block_fwd = 2 * t * (4 * big_d * big_d + 3 * big_d * f) + 4 * t * t * big_d
    return {"trunk_fwd": trunk_fwd, "block_fwd": block_fwd, "trunk_train": 3 * trunk_fwd, "block_train": 2 * block_fwd}


def build(config: str, s: dict, device: torch.device):
    from transformers import LlamaConfig

    from hf_frozenlm import ViTLlamaForImageClassification
    from reference_vit_llama import ReferenceViTLlama

    torch.manual_seed(0)
    if config == "a":
        return ReferenceViTLlama(s["d"], s["depth"], s["heads"], s["image"], s["patch"], s["classes"], s["D"], s["H"], s["F"]).to(device)
    llm = LlamaConfig(hidden_size=s["D"], intermediate_size=s["F"], num_attention_heads=s["H"], num_key_value_heads=s["H"],
                      num_hidden_layers=1, rms_norm_eps=1e-6, vocab_size=32)
    model = ViTLlamaForImageClassification.from_parts(
        "vit-small", llm, num_labels=s["classes"], llm_dtype="float32" if config == "b" else "bfloat16",
        trunk_kwargs=dict(hidden_size=s["d"], num_attention_heads=s["heads"], intermediate_size=4 * s["d"],
                          num_hidden_layers=s["depth"], image_size=s["image"], patch_size=s["patch"]),
    ).to(device)
    if config == "e":
        # transformers >= 5 names it activation_checkpointing_enable (the old name warns).
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    return model


def logits_of(model, pixels):
    out = model(pixels)
    return out if isinstance(out, torch.Tensor) else out.logits


def make_step(config: str, s: dict, device: torch.device):
    """(model, step function) for one configuration: zero_grad + forward + cross-entropy + backward + AdamW step."""
    model = build(config, s, device)
    model.train()
    autocast = config == "f" or (device.type == "cuda" and config in "cdef")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.05)
    forward = torch.compile(model) if config == "d" else model
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(s["batch"], 3, s["image"], s["image"], generator=generator).to(device)
    labels = torch.randint(0, s["classes"], (s["batch"],), generator=generator).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(logits_of(forward, pixels), labels)
        loss.backward()
        optimizer.step()

    return model, step


def memory_worker(config: str, args) -> dict:
    """Peak RSS of training steps of one configuration, in a fresh process (model built, then peak reset)."""
    device = bc.pick_device(args.device)
    model, step = make_step(config, shapes(args.tiny), device)
    gc.collect()
    bc.reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = bc.time_calls(step, 1, warmup=0, device=device)  # the first step also allocates the AdamW state
    return {"config": config, "peak_rss_mib": bc.peak_rss_mib(), "cuda_peak_mib": bc.cuda_peak_mib(device),
            "frozen_grads": sum(p.grad is not None for p in model.parameters() if not p.requires_grad),
            "step_s": times[0]}


def block_only_times(model, s, device, args) -> list[float]:
    """Forward + input-grad backward of the frozen LLM layer alone, in its dtype (no projections, no trunk)."""
    block = model.vit_llama.frozen_lm
    layer = block.layers[0]
    tokens = (s["image"] // s["patch"]) ** 2 + 1
    x = torch.randn(s["batch"], tokens, s["D"], device=device, dtype=block.llm_dtype, requires_grad=True)
    ones = torch.ones(1, 1, block.head_dim, device=device, dtype=block.llm_dtype)
    identity_rotary = (ones, torch.zeros_like(ones))

    def run():
        out = layer(x, attention_mask=None, position_embeddings=identity_rotary)
        (out[0] if isinstance(out, tuple) else out).float().sum().backward()

    return bc.time_calls(run, args.steps, warmup=1, device=device)


def profile_step(step) -> dict:
    """Self time per op category for one training step (where the time that is not matmul goes)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    categories: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key
        if any(k in name for k in ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn", "aten::_mkl", "aten::matmul")):
            cat = "matmul"
        elif "attention" in name or "flash" in name:
            cat = "sdpa attention"
        elif any(k in name for k in ("_foreach", "adam", "Optimizer")):
            cat = "optimizer"
        elif any(k in name for k in ("copy_", "_to_copy", "clone", "contiguous", "cat")):
            cat = "copies/casts"
        elif any(k in name for k in ("norm", "rsqrt", "pow", "mean", "softmax", "gelu", "silu", "mul", "add", "div",
                                     "sum", "neg", "sub", "exp")):
            cat = "elementwise/norms"
        else:
            cat = "other"
        categories[cat] = categories.get(cat, 0.0) + event.self_cpu_time_total / 1e6
    return dict(sorted(categories.items(), key=lambda kv: -kv[1]))


def check_parity(device) -> float:
    """Max |logit difference| between the reference and ours (fp32) with the same weights, tiny shapes."""
    s = shapes(True)
    ours = build("b", s, device).eval()
    ref = build("a", s, device).eval()
    ref.copy_from_ours(ours)
    pixels = torch.randn(s["batch"], 3, s["image"], s["image"], device=device)
    with torch.no_grad():
        return float((ref(pixels) - ours(pixels).logits).abs().max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="abcdef", help="which of a-f to run (default all)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (+1 for torch.compile)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--profile", action="store_true", help="op-time breakdown of one (c) step")
    parser.add_argument("--skip-memory", action="store_true", help="no fresh-process peak-RSS pass")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(memory_worker(args.worker, args)))
        return 0

    device = bc.pick_device(args.device)
    s = shapes(args.tiny)
    print(bc.machine_line(device), file=sys.stderr)
    parity = check_parity(device)
    print(f"parity (tiny, fp32): max |reference - ours| logit difference {parity:.2e}", file=sys.stderr)
    assert parity < 1e-3, parity
    ceiling_shape = dict(m=256, k=256, n=256) if args.tiny else {}
    ceilings = {dt: bc.matmul_ceiling(dt, device, **ceiling_shape) for dt in (torch.float32, torch.bfloat16)}
    print(f"ceilings: fp32 {ceilings[torch.float32] / 1e9:.0f}, bf16 {ceilings[torch.bfloat16] / 1e9:.0f} GFLOP/s", file=sys.stderr)
    flops = flops_per_image(s)
    memory = {}
    if not args.skip_memory:  # peak RSS per configuration needs a fresh process each
        passthrough = ["--device", args.device] + ["--tiny"] * args.tiny
        for config in args.configs:
            memory[config] = bc.run_worker(str(HERE), ["--worker", config, *passthrough])
            print(f"  memory {config}: peak RSS {memory[config]['peak_rss_mib']:.0f} MiB", file=sys.stderr)
            assert memory[config]["frozen_grads"] == 0, f"{config}: frozen parameters got gradients"

    # Timing: every configuration built in this one process and stepped round-robin (one step of each per round),
    # so load from other jobs on shared cores hits all configurations alike and the ratios stay side by side.
    steps = {config: make_step(config, s, device) for config in args.configs}
    start = time.perf_counter()
    for _ in range(args.warmup):
        for config, (_, step) in steps.items():
            step()
            if config == "d":
                step()  # compiled: the first call compiles forward and backward
    bc.sync(device)
    print(f"  warm-up rounds: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    results = {config: {"times": []} for config in args.configs}
    for _ in range(args.steps):
        for config, (_, step) in steps.items():
            results[config]["times"] += bc.time_calls(step, 1, warmup=0, device=device)
    for config, r in results.items():
        print(f"  {config}: steps {[round(t, 2) for t in r['times']]} s", file=sys.stderr)
    if "c" in steps:
        model_c, step_c = steps["c"]
        results["c"]["block_times"] = block_only_times(model_c, s, device, args)
        if args.profile:
            results["c"]["profile"] = profile_step(step_c)
    del steps
    gc.collect()
    ceilings = {dt: max(c, bc.matmul_ceiling(dt, device, **ceiling_shape)) for dt, c in ceilings.items()}  # re-measured after, best kept

    batch = s["batch"]
    headers = ["configuration", "step s (best)", "step s (median)", "img/s", "x (a)", "peak RSS MiB", "MFU"]
    if device.type == "cuda":
        headers.append("peak CUDA MiB")
    rows = []
    base = min(results["a"]["times"]) if "a" in results else None
    for config, r in results.items():
        best = min(r["times"])
        block_dtype = torch.float32 if config in "ab" else torch.bfloat16
        trunk_dtype = torch.bfloat16 if (config == "f" or (device.type == "cuda" and config in "cdef")) else torch.float32
        ideal = batch * (flops["trunk_train"] / ceilings[trunk_dtype] + flops["block_train"] / ceilings[block_dtype])
        mem = memory.get(config, {})
        row = [CONFIGS[config], best, bc.median(r["times"]), batch / best, (base / best) if base else None,
               mem.get("peak_rss_mib"), f"{100 * ideal / best:.0f}%"]
        if device.type == "cuda":
            row.append(mem.get("cuda_peak_mib"))
        rows.append(row)
    print(f"\n### Training step: ViT-S + LLaMA-7B-shaped frozen block, batch {batch}, {s['image']} px\n")
    print(f"{bc.machine_line(device)}. Matmul ceilings measured in this run: fp32 {ceilings[torch.float32] / 1e9:.0f} "
          f"GFLOP/s, bf16 {ceilings[torch.bfloat16] / 1e9:.0f} GFLOP/s. Training FLOPs per image: trunk "
          f"{flops['trunk_train'] / 1e9:.1f} G, frozen block {flops['block_train'] / 1e9:.1f} G. "
          f"Reference vs ours (fp32) max logit difference on a tiny model: {parity:.1e}.\n")
    print(bc.markdown_table(headers, rows))
    if "c" in results:
        block_best = min(results["c"]["block_times"])
        achieved = batch * flops["block_train"] / block_best
        print(f"\nFrozen block alone (bf16, forward + input-grad backward, batch {batch}): {block_best:.2f} s = "
              f"{achieved / 1e9:.0f} GFLOP/s = {100 * achieved / ceilings[torch.bfloat16]:.0f}% of the bf16 ceiling.")
        if "profile" in results["c"]:
            total = sum(results["c"]["profile"].values())
            parts = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in results["c"]["profile"].items())
            print(f"Op self-time in one (c) step: {parts}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark 1: loading one LLaMA-7B-shaped layer, ours versus loading the whole checkpoint.

Writes a synthetic checkpoint with LLaMA-7B layer shapes (width 4096, FFN 11008, 32 heads, vocab 32000, random
bf16 weights; every layer holds the same random matrices in its own storage, with its norms stamped with the
layer index so a loader that returns the wrong layer is caught) and N layers, in two forms:
  hf/    config.json + model-0000k-of-0000n.safetensors shards (2 GB max each) + model.safetensors.index.json
  meta/  params.json + consolidated.00.pth (Meta's key names, one storage per tensor, written by torch.save)
Then, each method in a fresh process (so no method inherits another's allocations), it measures the wall time
of the load call and its peak RSS growth (peak RSS during the call minus RSS just before it; RSS counts the
file-backed pages of memory-mapped weights that were touched, so zero-copy loaders are charged for what they
read). Methods:
  ours (hf|meta)   hf_frozenlm.load_llm_layers(folder, [-1])  (incl. its sha256 provenance over the layer)
  transformers     LlamaForCausalLM.from_pretrained(hf, dtype=bfloat16), then model.model.layers[-1]
  official         torch.load(consolidated.00.pth) of the whole file, then copying the last layer's keys
  floor            reading the layer's bytes once into one buffer (pread from the shard, page cache warm)
Before every run the files the method reads are read once (page cache warm for all methods, when they fit).

Run:  python benchmarks/bench_load_layer.py            (N=8, ~3 min, 8 GB of temp files)
      python benchmarks/bench_load_layer.py --layers 32 (N=32, 27 GB of temp files, ~14 GB RAM for full loads)
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc  # noqa: E402  (sets threads before torch is imported)
import numpy as np
import torch

HERE = Path(__file__).resolve()
SHARD_BYTES = 2 * 10**9
META_NAMES = {  # HF layer name -> Meta layer name
    "input_layernorm.weight": "attention_norm.weight",
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
}
FULL_LOADS = ("transformers", "transformers+copy", "official")
TINY = dict(hidden_size=256, intermediate_size=688, num_attention_heads=4, num_key_value_heads=4,
            rms_norm_eps=1e-6, vocab_size=1000)


# -- the synthetic checkpoint -------------------------------------------------------------------------
def layer_shapes(shape: dict) -> dict[str, tuple[int, ...]]:
    d, f = shape["hidden_size"], shape["intermediate_size"]
    return {
        "input_layernorm.weight": (d,), "self_attn.q_proj.weight": (d, d), "self_attn.k_proj.weight": (d, d),
        "self_attn.v_proj.weight": (d, d), "self_attn.o_proj.weight": (d, d),
        "post_attention_layernorm.weight": (d,), "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d),
        "mlp.down_proj.weight": (d, f),
    }


def write_checkpoint(root: Path, n_layers: int, shape: dict, with_meta: bool = True) -> dict:
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    generator = torch.Generator().manual_seed(0)
    base = {name: (torch.randn(s, generator=generator) * 0.02).to(torch.bfloat16) for name, s in layer_shapes(shape).items()}
    d, vocab = shape["hidden_size"], shape["vocab_size"]
    hf = root / "hf"
    hf.mkdir(parents=True)
    LlamaConfig(**shape, num_hidden_layers=n_layers, tie_word_embeddings=False).save_pretrained(hf)

    # Ordered (name, factory) so tensors are materialised one shard at a time (RAM stays ~ one shard).
    def layer_tensor(i, name):
        if name.endswith("layernorm.weight"):
            return torch.full(base[name].shape, float(i + 1), dtype=torch.bfloat16)  # the stamp
        return base[name].clone()

    entries = [("model.embed_tokens.weight", lambda: (torch.randn(vocab, d, generator=generator) * 0.02).to(torch.bfloat16))]
    for i in range(n_layers):
        for name in base:
            entries.append((f"model.layers.{i}.{name}", lambda i=i, name=name: layer_tensor(i, name)))
    entries.append(("model.norm.weight", lambda: torch.ones(d, dtype=torch.bfloat16)))
    entries.append(("lm_head.weight", lambda: (torch.randn(vocab, d, generator=generator) * 0.02).to(torch.bfloat16)))

    shards, current, size = [], [], 0
    for key, factory in entries:
        shape_ = base[key.split(".", 3)[3]].shape if ".layers." in key else None
        nbytes = 2 * (int(np.prod(shape_)) if shape_ is not None else (vocab * d if "embed" in key or "lm_head" in key else d))
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((key, factory))
        size += nbytes
    shards.append(current)
    weight_map = {}
    for k, shard in enumerate(shards):
        filename = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({key: factory() for key, factory in shard}, str(hf / filename), metadata={"format": "pt"})
        weight_map.update({key: filename for key, _ in shard})
        gc.collect()
    (hf / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    hf_sizes = {"layer_bytes": sum(t.numel() * 2 for t in base.values()),
                "hf_bytes": sum(p.stat().st_size for p in hf.glob("*.safetensors"))}
    if not with_meta:
        return hf_sizes

    # Meta form: the same bytes, one storage per tensor, under Meta's names. The tensors are memory-mapped views of
    # the shards just written (copy-on-write, never modified), so writing 13 GB needs no 13 GB of RAM.
    meta = root / "meta"
    meta.mkdir()
    meta_state = {}
    for key, filename in weight_map.items():
        tensor = mapped_tensor(hf / filename, key)
        if key == "model.embed_tokens.weight":
            meta_state["tok_embeddings.weight"] = tensor
        elif key == "model.norm.weight":
            meta_state["norm.weight"] = tensor
        elif key == "lm_head.weight":
            meta_state["output.weight"] = tensor
        else:
            _, _, i, name = key.split(".", 3)
            meta_state[f"layers.{i}.{META_NAMES[name]}"] = tensor
    torch.save(meta_state, meta / "consolidated.00.pth")
    del meta_state
    params = {"dim": d, "multiple_of": 256, "n_heads": shape["num_attention_heads"], "n_layers": n_layers,
              "norm_eps": shape["rms_norm_eps"], "vocab_size": -1}
    (meta / "params.json").write_text(json.dumps(params))
    return {**hf_sizes, "meta_bytes": (meta / "consolidated.00.pth").stat().st_size}


def safetensors_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return 8 + length, header


def mapped_tensor(path: Path, key: str) -> torch.Tensor:
    data_start, header = safetensors_header(path)
    entry = header[key]
    begin, end = entry["data_offsets"]
    array = np.memmap(path, dtype=np.int16, mode="c", offset=data_start + begin, shape=((end - begin) // 2,))
    return torch.from_numpy(array).view(torch.bfloat16).reshape(entry["shape"])


def layer_byte_ranges(hf: Path, layer: int) -> list[tuple[Path, int, int]]:
    weight_map = json.loads((hf / "model.safetensors.index.json").read_text())["weight_map"]
    ranges = []
    for key, filename in weight_map.items():
        if key.startswith(f"model.layers.{layer}."):
            data_start, header = safetensors_header(hf / filename)
            begin, end = header[key]["data_offsets"]
            ranges.append((hf / filename, data_start + begin, end - begin))
    return ranges


def warm(paths) -> None:
    """Read files once so the page cache holds them (as far as RAM allows)."""
    buffer = bytearray(16 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


# -- one method, in a fresh process ---------------------------------------------------------------------
def worker(method: str, root: Path, n_layers: int) -> dict:
    hf, meta, last = root / "hf", root / "meta", n_layers - 1
    # Import everything first: only the load call itself is timed and charged for memory.
    import transformers  # noqa: F401
    from transformers import LlamaForCausalLM

    from hf_frozenlm import load_llm_layers

    gc.collect()
    before = bc.rss_mib()
    bc.reset_peak_rss()
    start = time.perf_counter()
    if method == "ours-hf":
        _, states, _ = load_llm_layers(str(hf), [-1])
        state = states[0]
    elif method == "ours-meta":
        _, states, _ = load_llm_layers(str(meta), [-1])
        state = states[0]
    elif method in ("transformers", "transformers+copy"):
        model = LlamaForCausalLM.from_pretrained(str(hf), dtype=torch.bfloat16)
        state = model.model.layers[-1].state_dict()
        if method == "transformers+copy":
            # transformers 5 memory-maps the shards and reads nothing until a weight is used; copying the layer out
            # (as FrozenLMBlock.load_llm_layer_states does with ours) makes it do the same work as the others.
            state = {name: tensor.clone() for name, tensor in state.items()}
        del model
    elif method == "official":
        # As the official code: the whole file into memory, then the one layer's keys copied out.
        checkpoint = torch.load(meta / "consolidated.00.pth", map_location="cpu")
        prefix = f"layers.{last}."
        inverse = {v: k for k, v in META_NAMES.items()}
        state = {inverse[k[len(prefix):]]: v.clone() for k, v in checkpoint.items() if k.startswith(prefix)}
        del checkpoint
    elif method == "floor":
        ranges = layer_byte_ranges(hf, last)
        buffer = torch.empty(sum(n for _, _, n in ranges), dtype=torch.uint8).numpy()
        view, offset = memoryview(buffer), 0
        for path, begin, nbytes in ranges:
            with open(path, "rb", buffering=0) as handle:
                handle.seek(begin)
                while nbytes:
                    got = handle.readinto(view[offset:offset + nbytes])
                    offset, nbytes = offset + got, nbytes - got
        state = None
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - start
    peak = bc.peak_rss_mib()
    if state is not None:  # the right layer, whole (norm weights carry the 1-based layer index)
        assert float(state["input_layernorm.weight"][0]) == float(n_layers), method
        assert len(state) == len(META_NAMES), sorted(state)
    return {"method": method, "seconds": seconds, "rss_growth_mib": peak - before, "rss_before_mib": before}


def files_for(method: str, root: Path, n_layers: int) -> list[Path]:
    if method in ("ours-hf", "floor"):
        return sorted({path for path, _, _ in layer_byte_ranges(root / "hf", n_layers - 1)})
    if method.startswith("transformers"):
        return sorted((root / "hf").glob("*.safetensors"))
    return [root / "meta" / "consolidated.00.pth"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="layers in the synthetic checkpoint (8; 32 = LLaMA-7B)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs per method")
    parser.add_argument("--full-repeats", type=int, default=None, help="runs for the two full-load methods")
    parser.add_argument("--workdir", default=None, help="where to write the checkpoint (default: a temp dir, removed)")
    parser.add_argument("--methods", default="floor,ours-hf,ours-meta,transformers,transformers+copy,official",
                        help="comma-separated subset of the methods")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.root), args.layers)))
        return 0

    shape = TINY if args.tiny else bc.LLAMA7B
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_load_"))
    root = base / f"llama7b_shaped_{args.layers}" if not args.tiny else base / "tiny"
    print(bc.machine_line(torch.device("cpu")), file=sys.stderr)
    try:
        start = time.perf_counter()
        sizes = write_checkpoint(root, args.layers, shape)
        print(f"wrote {root} in {time.perf_counter() - start:.0f} s: {sizes}", file=sys.stderr)
        methods = args.methods.split(",")
        results = {m: [] for m in methods}
        full_repeats = args.full_repeats or args.repeats
        # Interleave the repeats (round-robin over methods), so a burst of load from other jobs hits all alike.
        for repeat in range(max(args.repeats, full_repeats)):
            for method in methods:
                if repeat >= (full_repeats if method in FULL_LOADS else args.repeats):
                    continue
                warm(files_for(method, root, args.layers))
                result = bc.run_worker(str(HERE), ["--worker", method, "--root", str(root), "--layers", str(args.layers)])
                results[method].append(result)
                print(f"  {method}: {result['seconds']:.3f} s, +{result['rss_growth_mib']:.0f} MiB", file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
        else:
            shutil.rmtree(root, ignore_errors=True)

    summary = {m: (min(r["seconds"] for r in rs), bc.median([r["seconds"] for r in rs]),
                   bc.median([r["rss_growth_mib"] for r in rs])) for m, rs in results.items()}
    layer_mib = sizes["layer_bytes"] / 2**20
    labels = {"floor": ("floor: pread the layer's bytes once", "hf shard"),
              "ours-hf": ("ours: load_llm_layers", "hf shards"),
              "ours-meta": ("ours: load_llm_layers", "meta .pth (mmap)"),
              "transformers": ("transformers from_pretrained (lazy mmap), take layer", "hf shards"),
              "transformers+copy": ("transformers from_pretrained, copy the layer out", "hf shards"),
              "official": ("official: torch.load whole .pth, copy keys", "meta .pth")}
    refs = [m for m in ("transformers", "transformers+copy", "official") if m in summary]
    headers = ["method", "reads", "time s (best)", "time s (median)", "peak RSS growth MiB", "time / floor"]
    headers += [f"x faster than {m}" for m in refs] + [f"x less RSS than {m}" for m in refs]
    rows = []
    for method in methods:
        best, med, growth = summary[method]
        row = [labels[method][0], labels[method][1], best, med, growth,
               best / summary["floor"][0] if "floor" in summary else None]
        row += [summary[m][0] / best for m in refs] + [summary[m][2] / max(growth, 1.0) for m in refs]
        rows.append(row)
    print(f"\n### Loading the last layer of a {args.layers}-layer LLaMA-7B-shaped checkpoint (bf16)\n")
    print(f"One layer = {layer_mib:.0f} MiB; hf shards {sizes['hf_bytes'] / 2**30:.2f} GiB, consolidated.00.pth "
          f"{sizes['meta_bytes'] / 2**30:.2f} GiB. Fresh process per run, {args.repeats} runs per method "
          f"({full_repeats} for full loads), page cache warmed before each run. {bc.machine_line(torch.device('cpu'))}.\n")
    print(bc.markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

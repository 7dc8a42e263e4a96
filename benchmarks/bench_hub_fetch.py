"""Benchmark 5: taking one layer of a LLaMA-7B-shaped checkpoint from a Hub repo, bytes on the wire and wall time.

Writes the synthetic HF checkpoint of `bench_load_layer.py` (LLaMA-7B layer shapes, random bf16, N layers, 2 GB
shards + index) and serves it from a local stand-in for the Hub on 127.0.0.1 (`tests/local_hub.py`: the part of
the Hub's API that huggingface_hub uses, optionally throttled to one shared link of a stated bandwidth). Each method
runs in a fresh process with `HF_ENDPOINT` pointing at the server and an empty Hugging Face cache; the server counts
every body byte it sends. Methods:
  (a) snapshot   huggingface_hub.snapshot_download of the repo (what "download the model" means)
  (b) shards     what hf_frozenlm did before: hf_hub_download of config, index and every shard holding a piece of
                 the last layer, then reading the layer from them
  (c) ranges     hf_frozenlm.load_llm_layers(repo, [-1]): the shards' headers, then the layer's byte ranges
  (c) cached     the same call again with the cache of (c): no layer bytes travel
The last layer is read. Before each method the page cache's dirty pages are written back (`os.sync`), so no method
pays for the previous one's writes.

Run:  python benchmarks/bench_hub_fetch.py                               (N = 8, unthrottled, ~3.5 GB temp)
      python benchmarks/bench_hub_fetch.py --layers 32 --bandwidth 100   (N = 32, 100 MB/s link, ~31 GB temp)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc  # noqa: E402  (sets threads before torch is imported)
import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "tests"))  # the local Hub server lives with the tests that use it
REPO = "bench/llama-7b-shaped"
METHODS = ("snapshot", "shards", "ranges", "cached")
LABELS = {"snapshot": "(a) snapshot_download (whole repo)", "shards": "(b) shard-level download (before)",
          "ranges": "(c) byte ranges (load_llm_layers)", "cached": "(c) again, from the layer cache"}


def worker(method: str, n_layers: int) -> dict:
    """One method in this fresh process; HF_ENDPOINT and HF_HUB_CACHE are set by the parent."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from safetensors import safe_open

    from hf_frozenlm import load_llm_layers

    prefix = f"model.layers.{n_layers - 1}."
    start = time.perf_counter()
    if method == "snapshot":
        folder = Path(snapshot_download(REPO))
        _, states, _ = load_llm_layers(str(folder), [-1])
        state = states[0]
    elif method == "shards":
        hf_hub_download(REPO, "config.json")
        weight_map = json.loads(Path(hf_hub_download(REPO, "model.safetensors.index.json")).read_text())["weight_map"]
        state = {}
        for shard in sorted({shard for key, shard in weight_map.items() if key.startswith(prefix)}):
            with safe_open(hf_hub_download(REPO, shard), framework="pt") as handle:
                keys = [key for key in handle.keys() if key.startswith(prefix)]
                state.update({key[len(prefix):]: handle.get_tensor(key) for key in keys})
    else:
        _, states, _ = load_llm_layers(REPO, [-1])
        state = states[0]
    seconds = time.perf_counter() - start
    assert float(state["input_layernorm.weight"][0]) == float(n_layers), method  # the right layer (its stamp)
    assert len(state) == 9, sorted(state)
    return {"method": method, "seconds": seconds}


def run_method(method: str, hub, n_layers: int, cache: Path) -> dict:
    if method != "cached":  # (c) again reuses the cache that (c) filled
        shutil.rmtree(cache, ignore_errors=True)
    os.sync()  # no method pays for writing back the gigabytes a previous one left in the page cache
    hub.reset_counts()
    env_before = dict(os.environ)
    os.environ.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="0",
                      HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")
    try:
        result = bc.run_worker(str(HERE), ["--worker", method, "--layers", str(n_layers)], timeout=3600)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    requests = [r for r in hub.requests if r.method == "GET"]
    result["bytes"] = sum(r.body_bytes for r in requests)
    result["requests"] = len(hub.requests)
    if method == "snapshot":
        shutil.rmtree(cache, ignore_errors=True)  # 13 GB at N = 32: gone before the next method runs
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="layers in the synthetic checkpoint (8; 32 = LLaMA-7B)")
    parser.add_argument("--bandwidth", default="0",
                        help="throttle the server to one shared link of this many MB/s; 0 = unthrottled; a comma list "
                             "runs every method at each, on one written checkpoint (default: 0)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--workdir", default=None, help="where to write the checkpoint (default: a temp dir, removed)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.layers)))
        return 0

    from bench_load_layer import TINY, write_checkpoint
    from local_hub import Faults, LocalHub

    shape = TINY if args.tiny else bc.LLAMA7B
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_hub_"))
    root = base / (f"llama7b_shaped_{args.layers}" if not args.tiny else "tiny")
    methods = args.methods.split(",")
    print(bc.machine_line(torch.device("cpu")), file=sys.stderr)
    try:
        start = time.perf_counter()
        sizes = write_checkpoint(root, args.layers, shape, with_meta=False)
        print(f"wrote {root} in {time.perf_counter() - start:.0f} s: {sizes}", file=sys.stderr)
        tables = {}
        for bandwidth in [float(b) for b in args.bandwidth.split(",")]:
            results = tables[bandwidth] = {}
            with LocalHub({REPO: root / "hf"}, Faults(bandwidth=bandwidth * 1e6 or None)) as hub:
                for method in methods:
                    results[method] = run_method(method, hub, args.layers, root / "hf-cache")
                    print(f"  {bandwidth:g} MB/s, {method}: {results[method]}", file=sys.stderr)
    finally:
        shutil.rmtree(base if not args.workdir else root, ignore_errors=True)
    for bandwidth, results in tables.items():
        print_table(results, methods, sizes, args.layers, bandwidth)
    return 0


def print_table(results: dict, methods: list[str], sizes: dict, n_layers: int, bandwidth: float) -> None:
    layer = sizes["layer_bytes"]
    link = f"throttled to one {bandwidth:g} MB/s link" if bandwidth else "unthrottled (loopback)"
    print(f"\n### One layer of a {n_layers}-layer LLaMA-7B-shaped checkpoint from a Hub repo (bf16), {link}\n")
    print(f"One layer = {layer / 2**20:.1f} MiB; the repo's shards = {sizes['hf_bytes'] / 2**30:.2f} GiB. Bytes = body "
          f"bytes the local Hub server sent (all files, headers included). {bc.machine_line(torch.device('cpu'))}.\n")
    headers = ["method", "MiB transferred", "x the layer's bytes", "x less than (a)", "requests", "wall s",
               "MB/s (bytes / wall)"]
    rows = []
    for method in methods:
        r = results[method]
        rows.append([LABELS[method], r["bytes"] / 2**20, r["bytes"] / layer,
                     results["snapshot"]["bytes"] / max(r["bytes"], 1) if "snapshot" in results else None,
                     r["requests"], r["seconds"], r["bytes"] / 1e6 / r["seconds"] if r["bytes"] else None])
    print(bc.markdown_table(headers, rows))


if __name__ == "__main__":
    sys.exit(main())

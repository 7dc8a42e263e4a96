"""Helpers shared by the benchmark scripts: threads, device, timing, memory, the matmul ceiling, tables.

The scripts import this as a sibling module (`python benchmarks/bench_x.py` puts benchmarks/ on sys.path).
Thread count: 2 by default (the machine's cores), set *before* torch is imported so OpenMP/MKL see it;
override with the BENCH_THREADS environment variable or a script's --threads flag.
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("MKL_NUM_THREADS", str(THREADS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(THREADS)

# LLaMA-1 7B layer shapes (the paper's default block: the last of 32 layers).
LLAMA7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
               rms_norm_eps=1e-6, vocab_size=32000)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{fields['Model name'].strip()}, {fields['CPU(s)'].strip()} cores"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or "unknown CPU"


def machine_line(device: torch.device | None = None) -> str:
    device = device or pick_device()
    load = os.getloadavg()[0]
    return (f"device: {device_name(device)}; torch {torch.__version__}; python {platform.python_version()}; "
            f"load average at start {load:.2f} (the cores are shared with other jobs when this is above ~0.5)")


# -- memory (Linux /proc) -----------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mib() -> float:
    """Resident set size now (anonymous + file-backed pages mapped in, e.g. mmap'd weights that were touched)."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak RSS since the process started or since the last `reset_peak_rss()`."""
    return _status_kib("VmHWM") / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs), so peaks after this are per-phase."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def cuda_peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# -- timing -------------------------------------------------------------------------------------------
def time_calls(fn, repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Wall seconds of each of `repeats` calls of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values):
    return statistics.median(values)


def matmul_ceiling(dtype: torch.dtype, device: torch.device, m: int = 1576, k: int = 4096, n: int = 11008,
                   repeats: int = 6) -> float:
    """Best achieved FLOP/s of one large `F.linear` (2*m*k*n FLOPs) in `dtype`: the ceiling MFU is measured against.

    The default shape is the block's biggest matmul at batch 8 x 197 tokens (gate/up projection). Best of
    `repeats`, because other jobs on shared cores only ever make a call slower.
    """
    a = torch.randn(m, k, device=device).to(dtype)
    w = torch.randn(n, k, device=device).to(dtype)
    times = time_calls(lambda: torch.nn.functional.linear(a, w), repeats, warmup=2, device=device)
    return 2 * m * k * n / min(times)


# -- output -------------------------------------------------------------------------------------------
def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_worker(script: str, args: list[str], timeout: float = 900) -> dict:
    """Run `script` in a fresh Python process and parse the JSON line it prints last (a per-method measurement)."""
    env = dict(os.environ)
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])

"""Which precision training runs in: one decision, from the hardware or the user's switch.

bf16 autocast pays where the hardware has bf16 matrix units (GPUs with bf16, CPUs with AMX or AVX512-BF16: several
times fp32's speed there); elsewhere (an AVX2-only CPU) emulated bf16 is far slower than fp32, so training runs in
fp32. Recipes and tests must learn on both paths; `--precision fp32` (or HF_FROZENLM_PRECISION=fp32) forces the fp32
path anywhere, `--precision bf16` forces bf16 autocast.
"""

from __future__ import annotations

import os

import torch

PRECISIONS = ("auto", "bf16", "fp32")
PRECISION_ENV = "HF_FROZENLM_PRECISION"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = set(next((line for line in handle if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def cpu_description() -> str:
    """The CPU model, whether it has bf16 units (what `auto` decides from) and its core count, for provenance."""
    import platform

    name = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({'AMX/AVX512-BF16' if cpu_has_fast_bf16() else 'no bf16 units'}, {os.cpu_count()} cores)"


def default_precision() -> str:
    """The precision switch's value when no option names one: $HF_FROZENLM_PRECISION, else "auto"."""
    value = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        from ..errors import UsageError

        raise UsageError(f"{PRECISION_ENV}={value!r} is not one of {', '.join(PRECISIONS)}.")
    return value


def use_bf16(precision: str, use_cpu: bool) -> bool:
    """Whether training runs under bf16 autocast for this switch value on this machine."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if use_cpu or not torch.cuda.is_available():
        return cpu_has_fast_bf16()
    return torch.cuda.is_bf16_supported()

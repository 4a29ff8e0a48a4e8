"""bf16 only where it is fast: where the CPU (or GPU) has native bf16 arithmetic.

Measured on this project's CI CPU (Xeon, AVX-512 but no avx512_bf16/AMX): a bf16 GEMM ran at
49 GFLOP/s against 116 in fp32, and SmolLM2 training and generation were 2-3x slower in bf16.
On a CPU with avx512_bf16 the same code was 1.6x faster in bf16. Hence `bf16: auto`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def native_bf16() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(setting) -> bool:
    if setting == "auto":
        return native_bf16()
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"bf16 must be true, false or 'auto', not {setting!r}")


def autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

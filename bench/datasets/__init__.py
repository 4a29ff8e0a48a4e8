"""Dataset registry: a spec string (plus parameters from the suite) -> Interactions."""
from __future__ import annotations

import inspect
from typing import Callable

from bench.datasets.amazon import load_amazon2018
from bench.datasets.atomic import load_atomic_dir
from bench.datasets.base import Interactions
from bench.datasets.movielens import load_ml1m, load_ml100k
from bench.datasets.synthetic import load_synthetic
from bench.errors import BenchError

DATASETS: dict[str, Callable[..., Interactions]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "synthetic": load_synthetic,
}
# Families whose spec carries an argument after the colon.
FAMILIES: dict[str, Callable[..., Interactions]] = {
    "amazon2018": load_amazon2018,
    "atomic": load_atomic_dir,
}


def load_dataset(spec: str, **params) -> Interactions:
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
    return loader(*args, **params)


__all__ = ["DATASETS", "FAMILIES", "Interactions", "load_dataset"]

"""How many test targets were picked by file order: users whose last event shares its timestamp
with another of their events (the split sorts by time, ties kept in file order, so which of the
tied items is the test target is the file's choice, not the clock's). For the table notes."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.split import MIN_EVENTS


@lru_cache(maxsize=8)
def _tied(spec: str, params_key: tuple) -> tuple[int, int]:
    data = load_dataset(spec, **dict(params_key))
    _, user = np.unique(data.user, return_inverse=True)
    counts = np.bincount(user)
    last = np.full(len(counts), -np.inf)
    np.maximum.at(last, user, data.timestamp.astype(np.float64))
    at_last = np.bincount(user, weights=(data.timestamp == last[user]).astype(np.float64)).astype(int)
    kept = counts >= MIN_EVENTS
    return int((at_last[kept] >= 2).sum()), int(kept.sum())


def tied_test_targets(entry) -> tuple[int, int] | None:
    """(users whose test target ties in time with another of their events, users kept), or None
    where the dataset's files cannot be read here."""
    try:
        return _tied(entry.spec, tuple(sorted(entry.params.items())))
    except (BenchError, OSError):
        return None

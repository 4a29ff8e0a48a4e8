"""What every dataset loader returns: raw interactions plus item text, with a recorded version."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Interactions:
    """Raw events in file order (ties in time are broken by this order) and item attributes.

    `item_text` maps a raw item id to its attributes as ordered (field, value) pairs; CALRec and the
    text baselines render them as `Name: value`.
    """

    name: str
    version: str
    user: np.ndarray  # raw user ids (str), one per event
    item: np.ndarray  # raw item ids (str)
    timestamp: np.ndarray  # float64
    item_text: dict[str, dict[str, str]]
    preprocessing: str = "all interactions kept as implicit feedback"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.user)
        if not (len(self.item) == len(self.timestamp) == n):
            raise ValueError("user, item and timestamp columns differ in length")


def file_fingerprint(*paths: Path) -> str:
    """Short content hash, so a table can say exactly which file version it came from."""
    h = hashlib.sha1()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:10]


def k_core(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of events kept by iterative k-core filtering (users and items with >= k events)."""
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep
    while True:
        _, uinv, ucnt = np.unique(user[keep], return_inverse=True, return_counts=True)
        _, iinv, icnt = np.unique(item[keep], return_inverse=True, return_counts=True)
        ok = (ucnt[uinv] >= k) & (icnt[iinv] >= k)
        if ok.all():
            return keep
        idx = np.flatnonzero(keep)
        keep[idx[~ok]] = False

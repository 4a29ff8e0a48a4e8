"""The one evaluator: full ranking, history masking, exact expected metrics under score ties.

Every model's output is reduced to two integers per user (see docs/protocol.md):
  above = items strictly ranked above the target, ties = other items tied with it.
The target's position is then uniform on above+1 .. above+ties+1, and Recall@K, NDCG@K and MRR
are their exact expectations over random tie orders (McSherry & Najork, ECIR 2008).

A target outside a model's ranked list is placed after the list, tied with the other unlisted
candidates: a miss at every K up to the list length. A target hidden by history masking (possible
only on repeat-consumption data) gets above = MISS (-1): a miss at every K, reciprocal rank 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)
MISS = -1  # `above` of a target that was never ranked


@dataclass(frozen=True)
class Ranks:
    """Per-user position of the target: `above` items strictly before it, `ties` tied with it."""

    above: np.ndarray  # int64
    ties: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.above)


def _history_csr(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if len(histories) else np.zeros(0, np.int64)
    return indptr, indices


def ranks_from_scores(
    scores: np.ndarray,
    targets: np.ndarray,
    histories: Sequence[np.ndarray] | None = None,
    chunk: int = 1024,
) -> Ranks:
    """Ranks of `targets` in a (users x items) score matrix; higher score = better.

    With `histories`, those items are excluded from the candidates (history masking). The caller's
    array is never modified. Works chunk by chunk so memory stays at `chunk` rows.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    n_users, n_items = scores.shape
    if len(targets) != n_users:
        raise ValueError(f"scores has {n_users} rows but {len(targets)} targets were given")
    if n_users and (targets.min() < 0 or targets.max() >= n_items):
        raise ValueError(f"target item index out of range [0, {n_items})")
    if histories is not None and len(histories) != n_users:
        raise ValueError(f"scores has {n_users} rows but {len(histories)} histories were given")
    indptr, indices = _history_csr(histories) if histories is not None else (None, None)
    above = np.empty(n_users, dtype=np.int64)
    ties = np.empty(n_users, dtype=np.int64)
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        block = np.asarray(scores[start:stop])
        if block.dtype.kind != "f":  # never downcast floats: that could create ties
            block = block.astype(np.float64)
        if np.isnan(block).any():
            bad = start + int(np.flatnonzero(np.isnan(block).any(axis=1))[0])
            raise ValueError(f"score matrix has NaN in row {bad}")
        rows = np.arange(stop - start)
        tgt = targets[start:stop]
        t = block[rows, tgt][:, None]
        candidate = np.ones(block.shape, dtype=bool)
        if indptr is not None:
            row_of = np.repeat(rows, np.diff(indptr[start : stop + 1]))
            candidate[row_of, indices[indptr[start] : indptr[stop]]] = False
        a = ((block > t) & candidate).sum(axis=1)
        e = ((block == t) & candidate).sum(axis=1) - 1
        hidden = ~candidate[rows, tgt]  # target is a history item: masked out, a miss
        above[start:stop] = np.where(hidden, MISS, a)
        ties[start:stop] = np.where(hidden, 0, e)
    return Ranks(above, ties)


def ranks_from_lists(
    lists: Sequence[Sequence[int]],
    targets: np.ndarray,
    n_items: int,
    histories: Sequence[np.ndarray] | None = None,
) -> Ranks:
    """Ranks of `targets` in ranked item lists (best first). Masked items are dropped from a list;
    unlisted candidates tie after the list."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(lists) != len(targets):
        raise ValueError(f"{len(lists)} ranked lists but {len(targets)} targets were given")
    above = np.empty(len(targets), dtype=np.int64)
    ties = np.empty(len(targets), dtype=np.int64)
    for u, (ranked, target) in enumerate(zip(lists, targets)):
        ranked = np.asarray(ranked, dtype=np.int64)
        if len(np.unique(ranked)) != len(ranked):
            raise ValueError(f"ranked list of user row {u} repeats an item")
        history = np.asarray(histories[u], dtype=np.int64) if histories is not None else np.zeros(0, np.int64)
        masked = np.unique(history)
        if masked.size:
            ranked = ranked[~np.isin(ranked, masked)]
        n_candidates = n_items - masked.size
        hit = np.flatnonzero(ranked == target)
        if masked.size and np.isin(target, masked):  # target hidden by masking: a miss
            above[u], ties[u] = MISS, 0
        elif hit.size:
            above[u], ties[u] = hit[0], 0
        else:  # unlisted candidates, the target among them, share the tail after the list
            above[u], ties[u] = len(ranked), max(n_candidates - len(ranked) - 1, 0)
    return Ranks(above, ties)


def _discount_prefix(n: int) -> np.ndarray:
    """D[p] = sum_{q=1..p} 1/log2(q+1), D[0] = 0."""
    d = np.zeros(n + 1)
    d[1:] = np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))
    return d


def _harmonic_prefix(n: int) -> np.ndarray:
    h = np.zeros(n + 1)
    h[1:] = np.cumsum(1.0 / np.arange(1, n + 1))
    return h


def metrics_from_ranks(ranks: Ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-user expected Recall@K (= HR@K), NDCG@K and MRR from ranks."""
    ranked = ranks.above != MISS
    g, t = np.where(ranked, ranks.above, 0), np.where(ranked, ranks.ties, 0)
    last = g + t + 1  # last possible position; first is g + 1
    n = int(last.max()) if len(last) else 1
    disc = _discount_prefix(n)
    harm = _harmonic_prefix(n)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        top = np.minimum(k, last)
        inside = np.clip(top - g, 0, None)
        out[f"Recall@{k}"] = np.where(ranked, inside / (t + 1), 0.0)
        out[f"NDCG@{k}"] = np.where(ranked & (inside > 0), disc[top] - disc[np.minimum(g, top)], 0.0) / (t + 1)
    out["MRR"] = np.where(ranked, (harm[last] - harm[g]) / (t + 1), 0.0)
    return out


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    return [f"{m}@{k}" for m in ("Recall", "NDCG") for k in ks] + ["MRR"]

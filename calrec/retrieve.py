"""From generated item texts to a ranked list of catalog items (docs/calrec-spec.md: Inference, steps 2-4)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from bench.text import BM25Catalog


def group_generations(texts: list[str], logprobs: list[float]) -> list[str]:
    """Distinct generations ordered by count, ties by mean log-probability (then text, for determinism)."""
    count: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for t, lp in zip(texts, logprobs):
        t = " ".join(t.split())
        if t:
            count[t] += 1
            total[t] += lp
    return sorted(count, key=lambda t: (-count[t], -total[t] / count[t], t))


def quasi_round_robin(groups: list[str], catalog: BM25Catalog, length: int, exclude: set[int],
                      depth: int | None = None) -> list[int]:
    """Each group's BM25 rank-1 item in group order, then each group's rank-2, ..., skipping items
    already taken and excluded (history) items, until `length` items. depth=1 is 'top-1 per sample'."""
    if not groups:
        return []
    need = length + len(exclude)
    lists = [catalog.top(g, need) for g in groups]
    out: list[int] = []
    taken: set[int] = set()
    max_depth = max(len(x) for x in lists) if depth is None else depth
    for r in range(max_depth):
        for lst in lists:
            if r < len(lst):
                item = int(lst[r])
                if item not in taken and item not in exclude:
                    taken.add(item)
                    out.append(item)
                    if len(out) == length:
                        return out
    return out


def fill_list(head: list[int], scores: np.ndarray, length: int, exclude: set[int]) -> list[int]:
    """`head`, then the best-scored items not in it and not excluded, until `length` items (the
    fill after the generations' own matches: popularity or dense-tower scores)."""
    out, taken = list(head[:length]), set(head)
    for item in np.argsort(-scores, kind="stable"):
        if len(out) >= length:
            break
        item = int(item)
        if item not in taken and item not in exclude:
            out.append(item)
            taken.add(item)
    return out


def top_items(scores: np.ndarray, m: int, exclude: set[int]) -> list[int]:
    """The m best-scored items outside `exclude`, best first."""
    return fill_list([], scores, m, exclude)


def reciprocal_rank_fusion(lists: list[list[int]], scores: np.ndarray | None, n_items: int, k: int = 60) -> np.ndarray:
    """RRF score per item from ranked lists and (optionally) a full score vector; unranked items get
    nothing from a list, so the evaluator ties them."""
    fused = np.zeros(n_items, dtype=np.float64)
    for lst in lists:
        fused[np.asarray(lst, dtype=np.int64)] += 1.0 / (k + 1 + np.arange(len(lst)))
    if scores is not None:
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(n_items, dtype=np.int64)
        rank[order] = np.arange(n_items)
        fused += 1.0 / (k + 1 + rank)
    return fused

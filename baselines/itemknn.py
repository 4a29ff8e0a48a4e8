"""ItemKNN: item-item cosine similarity from training co-occurrence, summed over recent history.

With `decay` < 1, older history items count less (a light sequential signal).
"""
from __future__ import annotations

from typing import Annotated

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from bench.models import FitContext
from bench.suites.schema import AT_LEAST_1, NON_NEGATIVE
from bench.split import Split


class ItemKNN:
    def __init__(self, neighbours: Annotated[int, AT_LEAST_1] = 100, window: Annotated[int, AT_LEAST_1] = 20,
                 decay: Annotated[float, Field(ge=0, le=1)] = 0.9, shrink: Annotated[float, NON_NEGATIVE] = 10.0):
        self.neighbours, self.window, self.decay, self.shrink = neighbours, window, decay, shrink

    def fit(self, split: Split, ctx: FitContext) -> None:
        rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(split.train)])
        cols = np.concatenate(split.train)
        x = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(split.n_users, split.n_items))
        x.data[:] = 1.0  # binary, even if a user repeats an item
        co = (x.T @ x).toarray()
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrink + 1e-12)
        np.fill_diagonal(sim, 0.0)
        if self.neighbours < split.n_items:
            # Keep each item's top neighbours only: the classic ItemKNN sparsification.
            cut = np.argpartition(-sim, self.neighbours - 1, axis=1)[:, self.neighbours:]
            np.put_along_axis(sim, cut, 0.0, axis=1)
        self.sim = sim.astype(np.float32)

    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(histories), self.sim.shape[0]), dtype=np.float32)
        for row, h in enumerate(histories):
            recent = h[-self.window:]
            weights = self.decay ** np.arange(len(recent))[::-1]
            out[row] = weights.astype(np.float32) @ self.sim[recent]
        return out

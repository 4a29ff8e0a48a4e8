"""bm25-text: BM25 over item texts, queried with the text of the user's last few items.

The no-training text baseline that CALRec must beat: it knows what the user watched, nothing of
what people watch next.
"""
from __future__ import annotations

import numpy as np

from bench.models import FitContext
from bench.split import Split
from bench.text import BM25Catalog


class BM25Text:
    def __init__(self, last_n: int = 3, k1: float = 1.5, b: float = 0.75):
        self.last_n, self.k1, self.b = last_n, k1, b

    def fit(self, split: Split, ctx: FitContext) -> None:
        self.item_text = [" ".join(a.values()) for a in split.item_text]
        self.index = BM25Catalog(split.item_text, self.k1, self.b)

    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(histories), self.index.n_items), dtype=np.float32)
        for row, h in enumerate(histories):
            recent = h[-self.last_n:]
            # Weight recent items higher by repeating them: the last item counts last_n times.
            query = " ".join(" ".join([self.item_text[i]] * (k + 1)) for k, i in enumerate(recent))
            out[row] = self.index.scores(query)
        return out

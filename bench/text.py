"""Item text and a BM25 index over a catalog, shared by the text baseline and CALRec's retrieval."""
from __future__ import annotations

import numpy as np


def render_item(attrs: dict[str, str]) -> str:
    """`Name: value` pairs in the dataset's fixed attribute order (CALREC_SPEC: Text)."""
    return ", ".join(f"{k}: {v if str(v).strip() else 'unknown'}" for k, v in attrs.items())


class BM25Catalog:
    """bm25s over one catalog's item texts. Field names ("Title:") are dropped from the indexed
    text: they occur in every item and would only add noise to the scores."""

    def __init__(self, item_text: list[dict[str, str]], k1: float = 1.5, b: float = 0.75):
        import bm25s

        self._bm25s = bm25s
        corpus = [" ".join(str(v) for v in attrs.values()) for attrs in item_text]
        self.n_items = len(corpus)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)

    def tokens(self, text: str) -> list[str]:
        return self._bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]

    def scores(self, text: str) -> np.ndarray:
        """BM25 score of every catalog item for one query (zeros if no query word is indexed)."""
        vocab = self.retriever.vocab_dict
        toks = [t for t in self.tokens(text) if t in vocab]
        if not toks:
            return np.zeros(self.n_items, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(toks), dtype=np.float32)

    def top(self, text: str, n: int) -> np.ndarray:
        """Item indices of the n best matches, best first (index order breaks score ties)."""
        s = self.scores(text)
        n = min(n, self.n_items)
        part = np.argpartition(-s, n - 1)[:n]
        return part[np.lexsort((part, -s[part]))]

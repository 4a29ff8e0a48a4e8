"""Item text and a BM25 index over a catalog, shared by the text baseline and CALRec's retrieval."""
from __future__ import annotations

import re

import numpy as np


def render_item(attrs: dict[str, str]) -> str:
    """`Name: value` pairs in the dataset's fixed attribute order (docs/calrec-spec.md: Text)."""
    return ", ".join(f"{k}: {_value(v)}" for k, v in attrs.items())


def render_compact(attrs: dict[str, str], fields: list[str] | None = None) -> str:
    """The first attribute, the others in parentheses: `Toy Story (1995)`. Fewer tokens per item
    than `Name: value` pairs, and the form titles take in the text an LLM was pretrained on."""
    values = [_value(attrs[k]) for k in (fields or list(attrs))]
    return values[0] + (f" ({', '.join(values[1:])})" if len(values) > 1 else "")


def _value(v) -> str:
    return str(v) if str(v).strip() else "unknown"


class BM25Catalog:
    """bm25s over one catalog's item texts. The corpus and every query pass through one
    normalisation (`normalise`), which drops the field names ("Title:"): they occur in every item,
    and a field name left in a query alone ("Year" is also a title word) would pick its items."""

    def __init__(self, item_text: list[dict[str, str]], k1: float = 1.5, b: float = 0.75):
        import bm25s

        self._bm25s = bm25s
        names = sorted({k for attrs in item_text for k in attrs}, key=len, reverse=True)
        self._fields = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\s*:", re.IGNORECASE) if names else None
        corpus = [self.normalise(render_item(attrs)) for attrs in item_text]
        self.n_items = len(corpus)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)

    def normalise(self, text: str) -> str:
        """Text with the catalog's field names ("Title:", "Year:") removed."""
        return self._fields.sub(" ", text) if self._fields else text

    def tokens(self, text: str) -> list[str]:
        return self._bm25s.tokenize([self.normalise(text)], stopwords="en", return_ids=False, show_progress=False)[0]

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

"""Non-personalised baselines: popularity and seeded random scores."""
from __future__ import annotations

import numpy as np

from bench.models import FitContext
from bench.split import Split


class Popularity:
    """Scores items by their number of training interactions (ties are handled by the evaluator)."""

    def fit(self, split: Split, ctx: FitContext) -> None:
        counts = np.bincount(np.concatenate(split.train), minlength=split.n_items) if split.train else np.zeros(split.n_items)
        self.scores = counts.astype(np.float32)

    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(histories), len(self.scores)))


class RandomScores:
    """Uniform random scores from the run's seed: the floor every model must clear."""

    def fit(self, split: Split, ctx: FitContext) -> None:
        self.n_items = split.n_items
        self.rng = np.random.default_rng(ctx.seed)

    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        return self.rng.random((len(histories), self.n_items), dtype=np.float32)

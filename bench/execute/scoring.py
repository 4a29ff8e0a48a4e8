"""Scores a fitted model's predictions for many users through the one evaluator: batches reduced to
ranks at once, with what a model returned checked first (a wrong shape, NaN, an item outside the catalog)."""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.evaluate import Ranks, metrics_from_ranks, ranks_from_lists, ranks_from_scores
from bench.models import is_scores
from bench.split import Split


def score_users(model, split: Split, users: np.ndarray, stage: str, masking: bool, batch: int, desc: str) -> Ranks:
    """Feed users to the model in batches and reduce each batch to ranks right away (bounded memory)."""
    above, ties = [], []
    for start in tqdm(range(0, len(users), batch), desc=desc, leave=False, unit="batch"):
        chunk = users[start : start + batch]
        histories = split.inputs(stage, chunk)
        targets = split.targets(stage, chunk)
        pred = model.predict(histories, chunk)
        mask = histories if masking else None
        if isinstance(pred, np.ndarray) and pred.ndim == 2 and pred.dtype.kind in "iub" \
                and pred.shape == (len(chunk), split.n_items):
            raise CellError(f"model returned an integer matrix of shape {pred.shape}: a users x items matrix must hold "
                            f"float scores (cast it), ranked lists come as a list of item arrays, one per user")
        if is_scores(pred):
            if pred.shape != (len(chunk), split.n_items):
                raise CellError(f"model returned scores of shape {pred.shape}, expected {(len(chunk), split.n_items)}")
            nan_rows = np.isnan(pred).any(axis=1)
            if nan_rows.any():  # NaN compares false with everything: the ranks would be arbitrary
                raise CellError(f"model returned NaN scores for {int(nan_rows.sum())} of {len(chunk)} users "
                                f"(first: {str(split.user_ids[chunk[nan_rows][0]])!r})")
            blind = np.isinf(pred).all(axis=1)
            if blind.any():  # every item tied at infinity: the model said nothing about these users
                raise CellError(f"model returned only infinite scores for {int(blind.sum())} of {len(chunk)} users "
                                f"(first: {str(split.user_ids[chunk[blind][0]])!r})")
            r = ranks_from_scores(pred, targets, mask)
        else:
            check_lists(pred, split, chunk)
            r = ranks_from_lists(pred, targets, split.n_items, mask)
        above.append(r.above)
        ties.append(r.ties)
    return Ranks(np.concatenate(above), np.concatenate(ties))


def check_lists(lists, split: Split, users: np.ndarray) -> None:
    """A model's ranked lists hold catalog indices: an item outside the catalog (a padding -1, an
    id from another split) would take a rank slot and silently lower every metric."""
    if len(lists) != len(users):
        raise CellError(f"model returned {len(lists)} ranked lists for {len(users)} users")
    for u, ranked in zip(users, lists):
        items = np.asarray(ranked)
        if items.size and (items.dtype.kind not in "iu" or items.min() < 0 or items.max() >= split.n_items):
            bad = next(x for x in items.tolist() if type(x) is not int or not 0 <= x < split.n_items)  # bools too
            raise CellError(f"model returned item {bad!r} outside the catalog [0, {split.n_items}) "
                             f"in the ranked list of user {str(split.user_ids[u])!r}")


class CellError(BenchError):
    """What a model returned for one cell cannot be scored (NaN scores, items outside the catalog):
    that cell fails with one line and the suite goes on (exit 1 at the end)."""


def masked_test_targets(split: Split, users: np.ndarray) -> int:
    """Evaluated users whose test item is in their own history: with history masking it can never
    be ranked (every metric 0 for that user, whatever the model)."""
    return sum(int(split.test[u] == split.valid[u] or split.test[u] in split.train[u]) for u in users)


def cold_test_targets(split: Split, users: np.ndarray) -> int:
    """Evaluated users whose test item never occurs in any training sequence (as split.stats counts)."""
    seen = np.zeros(split.n_items, dtype=bool)
    for seq in split.train:
        seen[seq] = True
    return int((~seen[split.test[users]]).sum())


def validation_metrics(model, split: Split, users: np.ndarray, batch: int = 512) -> dict[str, float]:
    """Mean Recall@10 and NDCG@10 on validation targets (history masked): what models select on, never test."""
    m = metrics_from_ranks(score_users(model, split, users, "valid", True, batch, "validation"), [10])
    return {name: float(m[name].mean()) for name in ("Recall@10", "NDCG@10")}


def validation_ndcg10(model, split: Split, users: np.ndarray, batch: int = 512) -> float:
    return validation_metrics(model, split, users, batch)["NDCG@10"]

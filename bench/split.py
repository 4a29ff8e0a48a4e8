"""Leave-one-out by time (docs/protocol.md): test = last item, validation = second-to-last, train = rest."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.datasets import Interactions
from bench.errors import BenchError

MIN_EVENTS = 3


@dataclass
class Split:
    dataset: str
    version: str
    preprocessing: str
    item_ids: np.ndarray  # internal item index -> raw id
    item_text: list[dict[str, str]]  # internal item index -> attributes
    user_ids: np.ndarray  # internal user index -> raw id
    train: list[np.ndarray]  # per user, item indices in time order
    valid: np.ndarray  # per user, the validation target
    test: np.ndarray  # per user, the test target
    dropped_users: int

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def inputs(self, stage: str, users: np.ndarray | None = None) -> list[np.ndarray]:
        """Model input sequences: train part for validation, train + validation item for test."""
        users = np.arange(self.n_users) if users is None else users
        if stage == "valid":
            return [self.train[u] for u in users]
        if stage == "test":
            return [np.append(self.train[u], self.valid[u]) for u in users]
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")

    def targets(self, stage: str, users: np.ndarray | None = None) -> np.ndarray:
        users = np.arange(self.n_users) if users is None else users
        return {"valid": self.valid, "test": self.test}[stage][users]

    def stats(self) -> dict:
        train_items = np.zeros(self.n_items, dtype=bool)
        for seq in self.train:
            train_items[seq] = True
        n_events = sum(len(s) for s in self.train) + 2 * self.n_users
        return {
            "dataset": self.dataset,
            "version": self.version,
            "preprocessing": self.preprocessing,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": int(n_events),
            "dropped_users": self.dropped_users,
            "cold_test_targets": int((~train_items[self.test]).sum()),
            "cold_valid_targets": int((~train_items[self.valid]).sum()),
        }


def leave_one_out(data: Interactions) -> Split:
    """Stable sort by (user, timestamp); equal timestamps keep file order."""
    if len(data.user) == 0:
        raise BenchError(f"{data.name}: no interactions")
    user_ids, user_code = np.unique(data.user, return_inverse=True)
    order = np.lexsort((np.arange(len(user_code)), data.timestamp, user_code))
    user_sorted = user_code[order]
    counts = np.bincount(user_sorted, minlength=len(user_ids))
    keep_user = counts >= MIN_EVENTS
    if not keep_user.any():
        raise BenchError(f"{data.name}: no user has {MIN_EVENTS} or more interactions")
    kept = keep_user[user_sorted]
    item_ids, item_code = np.unique(data.item[order][kept], return_inverse=True)
    bounds = np.cumsum(counts[keep_user])[:-1]
    seqs = np.split(item_code.astype(np.int64), bounds)
    missing = [i for i in item_ids if i not in data.item_text] if data.item_text else []
    if missing:
        raise BenchError(f"{data.name}: item {str(missing[0])!r} has interactions but no entry in the item file")
    fields = next(iter(data.item_text.values())).keys() if data.item_text else []
    item_text = [data.item_text.get(i, {f: "unknown" for f in fields}) for i in item_ids]
    return Split(
        dataset=data.name,
        version=data.version,
        preprocessing=data.preprocessing,
        item_ids=item_ids,
        item_text=item_text,
        user_ids=user_ids[keep_user],
        train=[s[:-2] for s in seqs],
        valid=np.array([s[-2] for s in seqs], dtype=np.int64),
        test=np.array([s[-1] for s in seqs], dtype=np.int64),
        dropped_users=int((~keep_user).sum()),
    )

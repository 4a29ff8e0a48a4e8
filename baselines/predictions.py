"""A model trained elsewhere, scored by this evaluator from its predictions file (`bench score`).

The file is CSV or Parquet in one of three layouts (header names as below; `user_id` / `item_id`
are accepted for `user` / `item`):

    user, item, score     any number of scored items per user, higher = better
    user, rank, item      ranked lists, rank 1 = best
    user, items           one row per user, item ids separated by spaces, best first
                          (what a RecBole `full_sort_topk` is usually saved as)

Ids are the dataset's raw ids, as `bench export` writes them. Items a user's list leaves out tie
after it (the protocol's rule for ranked lists), and history masking applies as for every model.
The file's SHA-256 is part of the cell's configuration: another file is another cell, and a file
changed after scoring is refused rather than silently scored again.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.models import FitContext
from bench.split import Split

ALIASES = {"user_id": "user", "item_id": "item", "item_list": "items", "topk": "items"}
LAYOUTS = (("user", "item", "score"), ("user", "rank", "item"), ("user", "items"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_table(path: Path):
    """The file as a DataFrame of strings (ids stay ids: '007' is not 7), and how to name a row of it."""
    import pandas as pd

    if not path.is_file():
        raise BenchError(f"{path}: predictions file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            try:
                frame = pd.read_parquet(path).astype(str)
            except ImportError:
                raise BenchError(f"{path}: reading Parquet needs pyarrow (pip install -e '.[parquet]')") from None
            where = lambda i: f"{path}: row {i + 1}"  # noqa: E731
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            where = lambda i: f"{path}:{i + 2}"  # noqa: E731 -- line 1 is the header
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: cannot be read as a predictions table ({str(e).splitlines()[0]})") from None
    frame.columns = [ALIASES.get(c.strip().lower(), c.strip().lower()) for c in frame.columns]
    return frame, where


def _layout(frame, path: Path) -> tuple[str, ...]:
    for layout in LAYOUTS:
        if set(layout) <= set(frame.columns):
            return layout
    raise BenchError(f"{path}: needs the columns user,item,score or user,rank,item or user,items "
                     f"(has {','.join(frame.columns) or 'none'})")


def parse_predictions(path: Path, split: Split) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], str, int]:
    """user index -> (item indices, scores, higher = better), the layout's name and the row count.
    The first bad row (unknown user or item, an item twice in one user's list, a score that is not
    a number, a rank that is not a positive integer or repeats) stops it with one line naming it."""
    frame, where = read_table(path)
    if frame.empty:
        raise BenchError(f"{path}: no predictions (the file has no rows)")
    layout = _layout(frame, path)
    user_index = {str(u): i for i, u in enumerate(split.user_ids)}
    item_index = {str(x): i for i, x in enumerate(split.item_ids)}
    lists: dict[int, tuple[list[int], list[float]]] = {}
    seen: set[tuple[int, int]] = set()  # (user, item)
    ranks: set[tuple[int, float]] = set()  # (user, rank): a lookup per row, not a scan of the user's list
    for row, record in enumerate(frame.itertuples(index=False)):
        r = record._asdict()
        user = user_index.get(r["user"].strip())
        if user is None:
            raise BenchError(f"{where(row)}: unknown user {r['user']!r} (not a user of {split.dataset})")
        if layout[1] == "items":
            if user in lists:
                raise BenchError(f"{where(row)}: user {r['user']!r} has a second row (one row of items per user)")
            tokens = r["items"].split()
            pairs = [(tok, -float(pos)) for pos, tok in enumerate(tokens)]
        else:
            value = r[layout[2] if layout[1] == "item" else "rank"]
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if layout[1] == "rank" and not (np.isfinite(number) and number >= 1 and number == int(number)):
                raise BenchError(f"{where(row)}: rank {value!r} is not a positive integer")
            if np.isnan(number):
                raise BenchError(f"{where(row)}: score {value!r} is not a number")
            pairs = [(r["item"], number if layout[1] == "item" else -number)]
        items, scores = lists.setdefault(user, ([], []))
        for token, score in pairs:
            item = item_index.get(token.strip())
            if item is None:
                raise BenchError(f"{where(row)}: unknown item {token!r} (not an item of {split.dataset})")
            if (user, item) in seen:
                raise BenchError(f"{where(row)}: item {token!r} appears twice for user {r['user']!r}")
            if layout[1] == "rank":
                if (user, score) in ranks:
                    raise BenchError(f"{where(row)}: rank {r['rank']!r} given twice for user {r['user']!r}")
                ranks.add((user, score))
            seen.add((user, item))
            items.append(item)
            scores.append(score)
    out = {u: (np.asarray(i, dtype=np.int64), np.asarray(s, dtype=np.float64)) for u, (i, s) in lists.items()}
    return out, ",".join(layout), len(frame)


class Predictions:
    """Scores read from a file: `fit` checks the file against the split, `predict` returns the scores
    (unlisted items at -inf, so they tie after the listed ones)."""

    def __init__(self, file: str, sha256: str, declared: str = ""):
        self.file = Path(file)
        self.sha256 = sha256
        self.declared = declared  # what the user said about the model (free text, stored in run.json)
        self.lists: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def fit(self, split: Split, ctx: FitContext) -> None:
        if not self.file.is_file():
            raise BenchError(f"{self.file}: predictions file not found")
        actual = file_sha256(self.file)
        if actual != self.sha256:
            raise BenchError(f"{self.file}: changed since it was registered (SHA-256 {actual[:12]}, registered "
                             f"{self.sha256[:12]}); score it again with bench score")
        self.split = split
        self.lists, self.layout, self.rows = parse_predictions(self.file, split)

    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        scores = np.full((len(users), self.split.n_items), -np.inf)
        for row, u in enumerate(users):
            if int(u) not in self.lists:
                raise BenchError(f"{self.file}: no prediction for user {str(self.split.user_ids[u])!r}, whom the suite "
                                 f"evaluates (bench export writes the evaluated users to test_users.csv)")
            items, values = self.lists[int(u)]
            scores[row, items] = values
        return scores

    def info(self) -> dict:
        return {"file": str(self.file), "sha256": self.sha256, "declared": self.declared, "layout": self.layout,
                "rows": self.rows, "users_in_file": len(self.lists)}

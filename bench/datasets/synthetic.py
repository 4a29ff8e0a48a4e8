"""A seeded synthetic dataset with real sequential structure, for tests and the smoke suite.

Each item has a few successors in its own category; a user's next item follows a successor with
probability `markov`, otherwise it is drawn by Zipf popularity. So a sequence model can beat
popularity, and popularity beats random. Titles carry category words, so text models have a signal.
"""
from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from bench.datasets.base import Interactions
from bench.suites.schema import AT_LEAST_1, NON_NEGATIVE, SEED

CATEGORIES = ["Garden", "Kitchen", "Music", "Books", "Toys", "Sports", "Beauty", "Office"]
NOUNS = {
    "Garden": ["rake", "hose", "planter", "seeds"],
    "Kitchen": ["pan", "knife", "kettle", "grater"],
    "Music": ["guitar", "drum", "piano", "violin"],
    "Books": ["novel", "atlas", "memoir", "poems"],
    "Toys": ["puzzle", "robot", "doll", "kite"],
    "Sports": ["ball", "racket", "helmet", "skates"],
    "Beauty": ["lotion", "brush", "perfume", "serum"],
    "Office": ["stapler", "folder", "marker", "desk"],
}
ADJECTIVES = ["red", "blue", "small", "large", "classic", "modern", "quiet", "bright", "soft", "sturdy"]


def load_synthetic(
    n_users: Annotated[int, AT_LEAST_1] = 300,
    n_items: Annotated[int, Field(ge=2)] = 200,
    n_categories: int = 6,
    min_len: Annotated[int, AT_LEAST_1] = 5,
    max_len: int = 30,
    markov: Annotated[float, Field(ge=0, le=1)] = 0.7,
    n_successors: Annotated[int, AT_LEAST_1] = 3,
    zipf: Annotated[float, NON_NEGATIVE] = 1.1,
    seed: Annotated[int, SEED] = 0,
) -> Interactions:
    check_synthetic(n_users, n_items, n_categories, min_len, max_len, markov, n_successors, zipf, seed)
    rng = np.random.default_rng(seed)
    category = rng.integers(0, n_categories, size=n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf
    popularity = popularity[rng.permutation(n_items)]
    popularity /= popularity.sum()
    successors = np.empty((n_items, n_successors), dtype=np.int64)
    for i in range(n_items):
        same = np.flatnonzero((category == category[i]) & (np.arange(n_items) != i))
        pool = same if len(same) >= n_successors else np.flatnonzero(np.arange(n_items) != i)
        successors[i] = rng.choice(pool, size=n_successors, replace=False)
    succ_weights = np.array([0.6, 0.3, 0.1][:n_successors] + [0.1] * max(0, n_successors - 3))
    succ_weights /= succ_weights.sum()

    users, items, times = [], [], []
    for u in range(n_users):
        length = int(rng.integers(min_len, max_len + 1))
        seq = [int(rng.choice(n_items, p=popularity))]
        seen = set(seq)
        while len(seq) < length:
            nxt = -1
            if rng.random() < markov:
                for s in rng.choice(successors[seq[-1]], size=n_successors, replace=False, p=succ_weights):
                    if s not in seen:
                        nxt = int(s)
                        break
            tries = 0
            while nxt < 0 or nxt in seen:
                nxt = int(rng.choice(n_items, p=popularity))
                tries += 1
                if tries > 50:
                    break
            if nxt in seen:
                break
            seq.append(nxt)
            seen.add(nxt)
        # Integer steps of 0..2 produce equal timestamps on purpose: the split must break them by order.
        t = np.cumsum(rng.integers(0, 3, size=len(seq))) + 1_000_000 + u
        users += [f"u{u}"] * len(seq)
        items += [f"i{i}" for i in seq]
        times += t.tolist()

    item_text = {}
    for i in range(n_items):
        cat = CATEGORIES[category[i]]
        noun = NOUNS[cat][i % len(NOUNS[cat])]
        item_text[f"i{i}"] = {"Title": f"{ADJECTIVES[i % len(ADJECTIVES)]} {noun} {i}", "Category": cat}
    params = dict(n_users=n_users, n_items=n_items, n_categories=n_categories, min_len=min_len,
                  max_len=max_len, markov=markov, n_successors=n_successors, zipf=zipf, seed=seed)
    return Interactions(
        name="synthetic",
        version="synthetic v1 " + " ".join(f"{k}={v}" for k, v in params.items()),
        user=np.array(users, dtype=str),
        item=np.array(items, dtype=str),
        timestamp=np.array(times, dtype=np.float64),
        item_text=item_text,
        preprocessing="generated",
    )


def check_synthetic(n_users: int = 300, n_items: int = 200, n_categories: int = 6, min_len: int = 5, max_len: int = 30,
                    markov: float = 0.7, n_successors: int = 3, zipf: float = 1.1, seed: int = 0) -> None:
    """The rules across parameters, checked with the plan (`bench.datasets.resolve`) and on load."""
    if n_items < 2 * n_successors or not 1 <= n_categories <= len(CATEGORIES) or min_len < 1 or max_len < min_len:
        raise ValueError(f"synthetic: need n_items >= 2*n_successors, 1 <= n_categories <= {len(CATEGORIES)}, "
                         f"1 <= min_len <= max_len (got n_items={n_items}, n_successors={n_successors}, "
                         f"n_categories={n_categories}, min_len={min_len}, max_len={max_len})")


load_synthetic.check = check_synthetic

"""`sample:<spec>`: a seeded sample of a dataset's users, every interaction of each kept user.

For CALRec's stage I on two CPU cores: ML-1M's frozen-layer cache is ~7 GB and hours to build, a
sample of 1,000 of its 6,040 users is about a sixth of that. A user's sequence is kept whole, so the
leave-one-out split of the sample is the split of those users in the whole dataset. The data version
names the sample, so cached weights trained on it are keyed apart from the whole dataset's.
"""
from __future__ import annotations

from typing import Annotated

import numpy as np

from bench.datasets.base import Interactions
from bench.errors import BenchError
from bench.suites.schema import AT_LEAST_1, SEED


def load_user_sample(inner: str, users: Annotated[int, AT_LEAST_1], seed: Annotated[int, SEED] = 0) -> Interactions:
    from bench.datasets import load_dataset  # the registry imports this module

    data = load_dataset(inner)
    ids = np.unique(data.user)
    if users >= len(ids):
        raise BenchError(f"dataset 'sample:{inner}': users {users} is not below its {len(ids)} users (name {inner!r} itself)")
    keep = np.sort(np.random.default_rng(seed).choice(ids, size=users, replace=False))
    rows = np.isin(data.user, keep)
    return Interactions(
        name=data.name,  # the domain's name in prompts stays the dataset's
        version=f"{data.version}; {users} of its {len(ids)} users drawn with seed {seed}",
        user=data.user[rows], item=data.item[rows], timestamp=data.timestamp[rows], item_text=data.item_text,
        preprocessing=f"{data.preprocessing}; a seeded sample of {users} of {len(ids)} users, each kept whole",
        extra=data.extra,
    )

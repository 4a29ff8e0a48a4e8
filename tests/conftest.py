import numpy as np
import pytest

from bench.datasets.base import Interactions


def make_interactions(rows, item_text=None, name="toy") -> Interactions:
    """rows: (user, item, timestamp) in file order."""
    users, items, ts = zip(*rows)
    items_all = sorted(set(items))
    return Interactions(
        name=name, version="toy v1",
        user=np.array(users, dtype=str), item=np.array(items, dtype=str), timestamp=np.array(ts, dtype=float),
        item_text=item_text or {i: {"Title": f"title {i}"} for i in items_all},
    )


@pytest.fixture
def toy():
    return make_interactions

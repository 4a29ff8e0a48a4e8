import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.split import leave_one_out


def test_leave_one_out_order_and_equal_timestamps(toy):
    # User a: equal timestamps at 5 must keep file order (x before y); events out of file order by time.
    data = toy([("a", "z", 9), ("a", "x", 5), ("a", "y", 5), ("a", "w", 1), ("b", "x", 1), ("b", "y", 2), ("b", "w", 3)])
    s = leave_one_out(data)
    ids = list(s.item_ids)
    a = list(s.user_ids).index("a")
    assert [ids[i] for i in s.train[a]] == ["w", "x"]
    assert ids[s.valid[a]] == "y" and ids[s.test[a]] == "z"
    assert s.inputs("test", np.array([a]))[0].tolist() == [ids.index("w"), ids.index("x"), ids.index("y")]


def test_short_users_dropped_and_counted(toy):
    data = toy([("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3)])
    s = leave_one_out(data)
    assert s.n_users == 1 and s.dropped_users == 1
    assert len(s.train[0]) == 1
    assert "x" in s.item_ids  # catalog = items of kept users


def test_no_user_long_enough_is_an_error(toy):
    with pytest.raises(BenchError, match="no user has 3"):
        leave_one_out(toy([("a", "x", 1), ("a", "y", 2)]))


def test_item_without_text_is_an_error(toy):
    data = toy([("a", "x", 1), ("a", "y", 2), ("a", "z", 3)], item_text={"x": {"Title": "X"}, "y": {"Title": "Y"}})
    with pytest.raises(BenchError, match="'z' has interactions but no entry"):
        leave_one_out(data)


def test_synthetic_is_seeded_and_sequential():
    a = leave_one_out(load_dataset("synthetic", n_users=50, n_items=60, seed=3))
    b = leave_one_out(load_dataset("synthetic", n_users=50, n_items=60, seed=3))
    assert all(np.array_equal(x, y) for x, y in zip(a.train, b.train))
    assert (a.test == b.test).all()
    c = leave_one_out(load_dataset("synthetic", n_users=50, n_items=60, seed=4))
    assert not all(np.array_equal(x, y) for x, y in zip(a.train, c.train))
    for seq in a.train:  # no repeats within a user: history masking never hides a target
        assert len(set(seq.tolist())) == len(seq)


def test_unknown_dataset_and_bad_params():
    with pytest.raises(BenchError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(BenchError, match="bad parameters"):
        load_dataset("synthetic", n_userz=5)
    with pytest.raises(BenchError, match="unknown dataset family"):
        load_dataset("kaggle:x")

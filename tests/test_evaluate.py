import math

import numpy as np
import pytest

from bench.evaluate import Ranks, metrics_from_ranks, ranks_from_lists, ranks_from_scores


def naive_expected(scores, target, masked, ks):
    """Independent check: enumerate every placement of the target within its tie group."""
    cand = [i for i in range(len(scores)) if i not in masked]
    if target in masked:
        return {f"Recall@{k}": 0.0 for k in ks} | {f"NDCG@{k}": 0.0 for k in ks} | {"MRR": 0.0}
    s = scores[target]
    g = sum(1 for i in cand if scores[i] > s)
    t = sum(1 for i in cand if scores[i] == s) - 1
    out = {}
    for k in ks:
        positions = range(g + 1, g + t + 2)
        out[f"Recall@{k}"] = sum(p <= k for p in positions) / (t + 1)
        out[f"NDCG@{k}"] = sum(1 / math.log2(p + 1) for p in positions if p <= k) / (t + 1)
    out["MRR"] = sum(1 / p for p in range(g + 1, g + t + 2)) / (t + 1)
    return out


def test_hand_computed_values():
    scores = np.array([[0.9, 0.5, 0.7, 0.1]], dtype=np.float32)
    r = ranks_from_scores(scores, np.array([2]))  # target is second
    assert (r.above[0], r.ties[0]) == (1, 0)
    m = metrics_from_ranks(r, ks=[1, 2])
    assert m["Recall@1"][0] == 0 and m["Recall@2"][0] == 1
    assert m["NDCG@2"][0] == pytest.approx(1 / math.log2(3))
    assert m["MRR"][0] == pytest.approx(0.5)


def test_constant_scores_give_k_over_n():
    n = 250
    r = ranks_from_scores(np.zeros((3, n), dtype=np.float32), np.array([0, 7, 249]))
    m = metrics_from_ranks(r, ks=[10])
    np.testing.assert_allclose(m["Recall@10"], 10 / n)
    assert not np.any(m["Recall@10"] == 1.0)


def test_partial_tie_straddling_k():
    # 8 items strictly above, target tied with 3 others: positions 9..12, K=10 catches 2 of 4.
    scores = np.array([[5.0] * 8 + [1.0] * 4 + [0.0] * 5])
    m = metrics_from_ranks(ranks_from_scores(scores, np.array([9])), ks=[10])
    assert m["Recall@10"][0] == pytest.approx(0.5)
    assert m["NDCG@10"][0] == pytest.approx((1 / math.log2(10) + 1 / math.log2(11)) / 4)


def test_history_masking_removes_items_and_target_in_history_is_a_miss():
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.9, 0.8, 0.1, 0.5]])
    r = ranks_from_scores(scores, np.array([3, 0]), histories=[np.array([0, 1]), np.array([0])])
    assert (r.above[0], r.ties[0]) == (0, 0)  # items 0 and 1 masked: target 3 is first
    m = metrics_from_ranks(r, ks=[1, 3])
    assert m["Recall@1"][0] == 1.0
    assert m["Recall@3"][1] == 0.0  # user 2's target was in the history


def test_masked_items_are_not_ties_even_for_minus_inf_scores():
    scores = np.array([[-np.inf, -np.inf, 1.0, -np.inf]])
    r = ranks_from_scores(scores, np.array([3]), histories=[np.array([0])])
    assert (r.above[0], r.ties[0]) == (1, 1)  # item 1 ties with the target, masked item 0 does not


def test_input_not_modified_and_nan_rejected():
    scores = np.array([[0.3, 0.2, 0.1]], dtype=np.float32)
    before = scores.copy()
    ranks_from_scores(scores, np.array([1]), histories=[np.array([0])])
    np.testing.assert_array_equal(scores, before)
    with pytest.raises(ValueError, match="NaN in row 0"):
        ranks_from_scores(np.array([[np.nan, 1.0]]), np.array([0]))


def test_lists_hit_miss_and_masking():
    lists = [[4, 2, 7], [4, 2, 7], [4, 2, 7]]
    r = ranks_from_lists(lists, np.array([2, 9, 2]), n_items=10, histories=[[], [], [4]])
    assert (r.above[0], r.ties[0]) == (1, 0)
    assert (r.above[1], r.ties[1]) == (3, 6)  # unlisted: 7 candidates share positions 4..10
    assert (r.above[2], r.ties[2]) == (0, 0)  # masked 4 dropped from the list
    m = metrics_from_ranks(r, ks=[3])
    assert m["Recall@3"][1] == 0.0
    with pytest.raises(ValueError, match="repeats"):
        ranks_from_lists([[1, 1]], np.array([1]), n_items=3)


def test_cross_check_random_rankings_against_naive_loop():
    rng = np.random.default_rng(0)
    ks = [1, 5, 10, 20]
    for trial in range(300):
        n = int(rng.integers(5, 60))
        # Few distinct values so that ties are common.
        scores = rng.integers(0, int(rng.integers(2, 8)), size=n).astype(np.float32)
        target = int(rng.integers(n))
        masked = set(rng.choice(n, size=int(rng.integers(0, 4)), replace=False).tolist())
        r = ranks_from_scores(scores[None], np.array([target]), histories=[np.array(sorted(masked), dtype=int)])
        got = metrics_from_ranks(r, ks)
        want = naive_expected(scores, target, masked, ks)
        for key, val in want.items():
            assert got[key][0] == pytest.approx(val, abs=1e-12), (trial, key)


def test_scores_and_equivalent_lists_agree():
    rng = np.random.default_rng(1)
    scores = rng.random((50, 40)).astype(np.float32)
    targets = rng.integers(0, 40, size=50)
    lists = [np.argsort(-s) for s in scores]
    a = ranks_from_scores(scores, targets)
    b = ranks_from_lists(lists, targets, n_items=40)
    np.testing.assert_array_equal(a.above, b.above)
    np.testing.assert_array_equal(a.ties, b.ties)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=(37, 30)).astype(np.float32)
    targets = rng.integers(0, 30, size=37)
    hist = [rng.choice(30, size=3, replace=False) for _ in range(37)]
    a = ranks_from_scores(scores, targets, hist, chunk=5)
    b = ranks_from_scores(scores, targets, hist, chunk=1000)
    np.testing.assert_array_equal(a.above, b.above)
    np.testing.assert_array_equal(a.ties, b.ties)


def test_metrics_monotone_in_k():
    r = Ranks(np.array([0, 3, 12, 40]), np.array([0, 2, 5, 0]))
    m = metrics_from_ranks(r, ks=[1, 5, 10, 20])
    for a, b in ((1, 5), (5, 10), (10, 20)):
        assert np.all(m[f"Recall@{a}"] <= m[f"Recall@{b}"])
        assert np.all(m[f"NDCG@{a}"] <= m[f"NDCG@{b}"] + 1e-15)


@pytest.mark.parametrize("bad, shown", [([3, 40], "40"), ([-1, 2], "-1"), ([1.0, 2], "1.0"), ([True], "True")])
def test_a_ranked_list_with_an_item_outside_the_catalog_is_refused(bad, shown):
    """Without the check, item 40 of a 30-item catalog would take rank 1 and push the target down."""
    from bench.datasets import load_dataset
    from bench.errors import BenchError
    from bench.execute.scoring import score_users
    from bench.split import leave_one_out

    split = leave_one_out(load_dataset("synthetic", n_users=20, n_items=30, seed=1))

    class Lists:
        def predict(self, histories, users):
            return [bad if u == 19 else [int(split.test[u])] for u in users]

    with pytest.raises(BenchError, match=rf"model returned item {shown} outside the catalog \[0, 30\) in the ranked list "
                                         rf"of user '{split.user_ids[19]}'"):
        score_users(Lists(), split, np.arange(20), "test", True, 8, "t")
    ok = score_users(type("Right", (), {"predict": lambda self, h, users: [[int(split.test[u])] for u in users]})(),
                     split, np.arange(20), "test", True, 8, "t")
    assert (ok.above == 0).all()

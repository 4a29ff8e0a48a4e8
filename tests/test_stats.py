import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bench.report.stats import bootstrap_ci, holm, paired_pvalue


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.random(400)
    return a, a + rng.normal(0.02, 0.1, 400)


def test_pvalues_equal_scipy(pair):
    a, b = pair
    assert paired_pvalue(a, b, "t-test") == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_pvalue(a, b, "wilcoxon") == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_permutation_close_to_t_test_on_large_sample(pair):
    a, b = pair
    assert paired_pvalue(a, b, "permutation", n_resamples=5000) == pytest.approx(paired_pvalue(a, b), abs=0.02)


def test_holm_equals_statsmodels():
    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    adj, rej = holm(p)
    want = multipletests(p, method="holm")
    np.testing.assert_allclose(adj, want[1])
    np.testing.assert_array_equal(rej, want[0])


@pytest.mark.parametrize("test", ["t-test", "permutation", "wilcoxon"])
def test_model_against_itself_never_significant(test, pair):
    a, _ = pair
    assert paired_pvalue(a, a.copy(), test) == 1.0


@pytest.mark.parametrize("test", ["t-test", "permutation", "wilcoxon"])
def test_clearly_better_model_is_significant(test):
    rng = np.random.default_rng(1)
    base = (rng.random(500) < 0.1).astype(float)
    better = np.maximum(base, (rng.random(500) < 0.3).astype(float))
    assert paired_pvalue(better, base, test) < 1e-3  # a permutation p-value cannot go below 1/(n_resamples+1)


def test_bootstrap_ci_brackets_mean():
    x = np.random.default_rng(2).random(300)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 0.1

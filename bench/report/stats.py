"""Paired significance tests on per-user metrics, Holm correction, bootstrap confidence intervals.

Thin, named wrappers over scipy and statsmodels, so a table states exactly which test it used.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

TESTS = ("t-test", "permutation", "wilcoxon")


def paired_pvalue(a: np.ndarray, b: np.ndarray, test: str = "t-test", n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value that per-user values `a` and `b` (same users, same order) differ in mean."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs equal lengths, got {a.shape} and {b.shape}")
    d = a - b
    if not np.any(d):  # identical systems: never significant (scipy would return nan)
        return 1.0
    if test == "t-test":
        return float(stats.ttest_rel(a, b).pvalue)
    if test == "permutation":
        # Paired randomisation test: flip the sign of each user's difference.
        res = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=n_resamples,
                                     alternative="two-sided", random_state=seed, vectorized=True)
        return float(res.pvalue)
    if test == "wilcoxon":
        return float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
    raise ValueError(f"unknown test {test!r} (known: {', '.join(TESTS)})")


def holm(pvalues, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and rejections over one family of comparisons."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p, p.astype(bool)
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return adjusted, reject


def bootstrap_ci(x: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over users."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 or np.all(x == x[0]):
        return float(x.mean()), float(x.mean())
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=seed, vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def relative_improvement(new: float, base: float) -> float:
    return float("nan") if base == 0 else (new - base) / base


def seed_means_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value that two rows differ, from their per-seed means (seed s of one against seed
    s of the other): a paired t-test over seeds, df = seeds - 1. With the same users in every seed
    this is the test of the mean difference in a mixed model with user effects and a random seed
    effect (balanced design), so training-run variance counts, not only the users'."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"a seed-level test needs >= 2 paired seeds, got {a.shape} and {b.shape}")
    if not np.any(a - b):
        return 1.0
    if np.all(a - b == (a - b)[0]):  # the same difference in every seed: no seed variance to test against
        return 0.0
    return float(stats.ttest_rel(a, b).pvalue)

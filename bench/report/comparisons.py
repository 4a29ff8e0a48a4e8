"""Each row of a table against its reference row: which test, on which seeds, the difference, its 95%
interval, the p-value and the Holm-adjusted one. The tables' arrows come from here, and
`<dataset>-tests.md` prints the numbers behind them, so a claim quotes a committed p-value rather than
one computed by hand. A pure function of the stored runs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from tabulate import tabulate

from bench.report.notes import ALPHA
from bench.report.results import REPORTED, VariantRuns, seed_independent
from bench.report.stats import bootstrap_ci, holm, paired_pvalue, seed_means_pvalue
from bench.suites.load import Suite

SEED_TEST_MIN = 3  # seeds both rows need for the seed-level test


def comparison(suite: Suite, runs: dict[str, VariantRuns], r: str, reference: str):
    """How row `r` is tested against the reference: (kind, metric -> (a, b)), kind None where it
    cannot be. 'deterministic': a model whose scores ignore the seed, per user against the
    reference's mean over all its seeds; 'seeds': both rows have >= 3 shared seeds, their per-seed
    means paired by seed (training-run variance counted); 'users': per user on the shared seeds."""
    row, ref = runs[r], runs[reference]
    shared = [s for s in row.seeds if s in ref.seeds]
    if seed_independent(suite.variant(r).model, row.records[0]["config"]["model"]["params"]):  # as the cells ran
        return "deterministic", lambda m: (row.user_metric(m, suite.ks), ref.user_metric(m, suite.ks))
    if not shared:
        return None, None
    if len(shared) >= SEED_TEST_MIN:
        pick = lambda vr, m: np.array([vr.metrics[vr.seeds.index(s)][m] for s in shared])
        return "seeds", lambda m: (pick(row, m), pick(ref, m))
    return "users", lambda m: (row.user_metric(m, suite.ks, shared), ref.user_metric(m, suite.ks, shared))


@dataclass
class Comparison:
    row: str
    metric: str
    kind: str  # "users", "seeds" or "deterministic" (see `comparison`)
    seeds: list[int]  # the row's seeds the test used
    row_mean: float
    reference_mean: float
    p: float
    p_holm: float = float("nan")
    significant: int = 0  # +1 / -1: higher / lower than the reference after Holm's correction
    a: np.ndarray | None = None  # what was tested: per-user values, or per-seed means (kind "seeds")
    b: np.ndarray | None = None
    # kind "seeds" only: the same pair tested per user on each user's mean over the shared seeds (a
    # second reading with users, not seeds, as the sample; unadjusted), to say where the two disagree
    p_users: float | None = None

    @property
    def difference(self) -> float:
        return self.row_mean - self.reference_mean

    def interval(self) -> tuple[float, float]:
        """95% interval of the difference: a t-interval over seeds for the seed-level test, else the
        percentile bootstrap over users (per-user differences, 2000 resamples, seed 0)."""
        d = np.asarray(self.a, dtype=np.float64) - np.asarray(self.b, dtype=np.float64)
        if self.kind == "seeds":
            half = stats.t.ppf(1 - ALPHA / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
            return float(d.mean() - half), float(d.mean() + half)
        return bootstrap_ci(d)


def compare_rows(suite: Suite, runs: dict[str, VariantRuns], rows: list[str], reference: str, metrics: list[str],
                 test: str = "t-test", family: str = "column") -> list[Comparison]:
    """Every row but the reference against it on every metric, Holm-corrected within each metric
    (`family="column"`) or over all of them (`"table"`). Rows with no seed to pair are left out."""
    out = []
    for r in rows:
        if r == reference:
            continue
        kind, pair = comparison(suite, runs, r, reference)
        if kind is None:
            continue
        seeds = runs[r].seeds if kind == "deterministic" else [s for s in runs[r].seeds if s in runs[reference].seeds]
        for m in metrics:
            a, b = pair(m)
            p = seed_means_pvalue(a, b) if kind == "seeds" else paired_pvalue(a, b, test)
            p_users = None
            if kind == "seeds":
                p_users = paired_pvalue(runs[r].user_metric(m, suite.ks, seeds),
                                        runs[reference].user_metric(m, suite.ks, seeds), test)
            out.append(Comparison(r, m, kind, seeds, float(np.mean(a)), float(np.mean(b)), p, a=a, b=b, p_users=p_users))
    for f in (metrics if family == "column" else [None]):
        members = [c for c in out if f is None or c.metric == f]
        adjusted, reject = holm([c.p for c in members], ALPHA)
        for c, adj, rej in zip(members, adjusted, reject):
            c.p_holm, c.significant = float(adj), int(np.sign(c.difference)) if rej else 0
    return out


KIND = {"users": "per user, shared seeds", "seeds": "per-seed means", "deterministic": "per user, vs reference's seed mean"}


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def tests_markdown(title: str, reference: str, tests: list[Comparison], label) -> str:
    """One table's comparisons on the REPORTED metrics: a row per compared row. `label`: variant key -> row label."""
    metrics = REPORTED
    rows = []
    for r in dict.fromkeys(c.row for c in tests):
        mine = {c.metric: c for c in tests if c.row == r}
        first = mine[metrics[0]]
        row = [label(r), KIND[first.kind], ", ".join(map(str, first.seeds))]
        for m in metrics:
            c = mine[m]
            low, high = c.interval()
            mark = {1: " ↑", -1: " ↓"}.get(c.significant, "")
            row += [f"{c.row_mean:.4f} vs {c.reference_mean:.4f}", f"{c.difference:+.4f} [{low:+.4f}, {high:+.4f}]",
                    _p(c.p), _p(c.p_holm) + mark, "" if c.p_users is None else _p(c.p_users)]
        rows.append(row)
    headers = ["Row", "Test", "Seeds"] + [h for m in metrics for h in (f"{m}: row vs reference", "difference [95% CI]",
                                                                         "p", "p (Holm)", "p per user")]
    return (f"### {title}: each row against {label(reference)}\n\n"
            + tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True) + "\n")


def tests_file(suite: Suite, tables, test: str, family: str) -> str | None:
    """`<dataset>-tests.md`: the comparisons of every table of a dataset that has a reference row."""
    tested = [t for t in tables if t.tests]
    if not tested:
        return None
    label = lambda key: suite.variant(key).label
    kinds = {c.kind for t in tested for c in t.tests}
    how = {"users": f"a paired {test} on per-user values over the seeds both rows ran (each user's value averaged over "
                    "those seeds); 95% interval: percentile bootstrap of the mean per-user difference (2000 resamples, "
                    "seed 0)",
           "seeds": "a paired t-test over the per-seed means, seed by seed (df = seeds - 1; training-run variance "
                    "counts); 95% interval: t-interval of the mean per-seed difference",
           "deterministic": f"a row whose scores ignore the seed, by a paired {test} on per-user values against the "
                            "reference's per-user means over all its seeds; 95% interval: bootstrap as per user"}
    holm_over = "within each metric column of its table" if family == "column" else "over every test of its table"
    return ("\n".join(tests_markdown(t.title, t.reference, t.tests, label) for t in tested)
            + "\n- The numbers behind the tables' arrows, from the same stored runs. Tests: "
            + "; ".join(f"{KIND[k]}: {how[k]}" for k in how if k in kinds)
            + f". p (Holm): Holm-adjusted {holm_over} (every metric of the table is tested; two are shown); ↑/↓ where "
            f"it is below alpha = {ALPHA}, as the table's arrows. p per user (rows tested on per-seed means only): the "
            f"same pair by a paired {test} on per-user values, each user's value averaged over the shared seeds "
            f"(users, not seeds, as the sample: it ignores training-run variance), unadjusted; where it and p fall on "
            f"different sides of alpha the two readings disagree. Differences are row minus reference.\n")

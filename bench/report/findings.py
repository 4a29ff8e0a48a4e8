"""What a suite's ablation shows, question by question (its `findings:` field): each row read
against its ablation table's reference with the test, interval, p and Holm p that
`results/tables/<suite>/<dataset>-tests.md` prints (the same function computes both), as a table
and a forest plot. The `ablation` suite's table on ML-100k is the README's findings, generated like
the headline table so the front page's claims cannot drift from the stored runs: `python -m bench
headline` writes both blocks and `bench check --readme` compares both.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from tabulate import tabulate

from bench.errors import BenchError
from bench.report.comparisons import KIND, Comparison, _p
from bench.report.notes import ALPHA
from bench.report.results import Missing, VariantRuns, load_runs
from bench.report.tables import dataset_tables
from bench.suites.load import Suite, load_suite

START, END = "<!-- findings:start (python -m bench headline) -->", "<!-- findings:end -->"
SUITE, DATASET = "ablation", "ml-100k"  # the README's block: the suite's `findings:` on this dataset
METRIC = "NDCG@10"
READS = {1: "higher", -1: "lower", 0: "not separated"}


def findings(suite: Suite, dataset: str, runs: dict[str, VariantRuns], missing: Missing
             ) -> list[tuple[str, str, str, Comparison | str]]:
    """(question or "" after a question's first row, row label, reference label, its test on METRIC
    or why there is none: "not run" (the row or its reference), "no seed shared"), in the order of
    the suite's `findings:` questions (whose tables and rows load_suite checked). `runs` and
    `missing` as bench.report.results.load_runs gives them."""
    tables = dataset_tables(suite, dataset, runs, missing)  # as `bench table` builds them: same tests and families
    label = lambda key: suite.variant(key).label  # noqa: E731
    out = []
    for q in suite.findings["questions"]:
        ref = suite.ablations[q["table"]][0]
        tested = {c.row: c for c in tables[f"{dataset}-ablation-{q['table']}"].tests if c.metric == METRIC}
        for i, r in enumerate(q["rows"]):
            why = "no seed shared" if r in runs and ref in runs else "not run"
            out.append((q["question"] if i == 0 else "", label(r), label(ref), tested.get(r, why)))
    return out


def agreement(c: Comparison) -> str:
    """Where a row is tested on per-seed means: the per-user p on seed-averaged values, and whether
    it falls on the same side of alpha as the seed-level p (both unadjusted)."""
    if c.p_users is None:
        return ""
    same = (c.p < ALPHA) == (c.p_users < ALPHA)
    return f"{_p(c.p_users)} ({'agrees' if same else 'disagrees'})"


def findings_markdown(root: Path, suite_name: str = SUITE, dataset: str = DATASET) -> str:
    suite = load_suite(suite_name)
    if not suite.findings:
        raise BenchError(f"{suite.path}: no `findings:` questions to build the findings table from")
    body = []
    for question, row, ref, c in findings(suite, dataset, *load_runs(suite, root, dataset)):
        if isinstance(c, str):
            body.append([question, f"{row} vs {ref}", c, "", "", "", "", "", ""])
            continue
        low, high = c.interval()
        body.append([question, f"{row} vs {ref}", ", ".join(map(str, c.seeds)),
                     f"{c.row_mean:.4f} vs {c.reference_mean:.4f}", f"{c.difference:+.4f} [{low:+.4f}, {high:+.4f}]",
                     f"{_p(c.p)} ({KIND[c.kind]})", _p(c.p_holm), READS[c.significant], agreement(c)])
    head = ["question", "row vs reference", "seeds", f"{METRIC}", "difference [95% CI]", "p (test)", "p (Holm)", "reads",
            "per user"]
    table = tabulate(body, headers=head, tablefmt="pipe", disable_numparse=True)
    users = "all test users" if suite.user_sample is None else f"{suite.user_sample['size']} sampled test users"
    note = " ".join(filter(None, [
        suite.findings["note"],
        f"{dataset}, {users}, the `{suite.name}` suite; {METRIC} of each row and of its reference over the "
        f"seeds tested (per-seed means paired seed by seed where both have three seeds, else per user over the "
        f"shared seeds); Holm within the {METRIC} column of the row's ablation table; reads: the Holm-adjusted "
        f"test at alpha = {ALPHA}; per user: where the test is over per-seed means, the same pair tested per user on "
        f"seed-averaged values (unadjusted p), and whether that reading agrees with the seed-level one at alpha. "
        f"Every test: `results/tables/{suite.name}/{dataset}-tests.md`."]))
    return f"{table}\n\n{textwrap.fill(note, 118)}\n"

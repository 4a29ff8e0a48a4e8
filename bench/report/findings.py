"""The README's findings table: what CALRec's ablation shows, question by question, each row read
against its ablation table's reference with the test, interval, p and Holm p that
`results/tables/ablation/<dataset>-tests.md` prints (the same function computes both). Generated
like the headline table, so the front page's claims cannot drift from the stored runs:
`python -m bench headline` writes both blocks and `bench check --readme` compares both.
"""
from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from bench.errors import BenchError
from bench.report.comparisons import KIND, _p
from bench.report.notes import ALPHA
from bench.report.results import load_runs
from bench.report.tables import dataset_tables
from bench.suites import load_suite

START, END = "<!-- findings:start (python -m bench headline) -->", "<!-- findings:end -->"
SUITE, DATASET, METRIC = "ablation", "ml-100k", "NDCG@10"
# (question, ablation table of the suite, the rows of that table it reads; each against the table's
# reference row, its first). The paper's two claims first: (i) its two stages, (ii) its contrastive terms.
QUESTIONS = [
    ("(i) both stages matter, I+II best", "stages", ["calrec-stage2", "calrec-stage1"]),
    ("(ii) the contrastive terms help", "losses", ["calrec-nig", "calrec-nig-tt", "calrec-nig-ut"]),
    ("the contrastive losses alone", "losses", ["calrec-contrastive"]),
    ("finetuning at all", "stages", ["calrec-zero-shot"]),
    ("the paper's inference, its setup", "inference", ["calrec-stage2-qrr", "calrec-paper"]),
    ("order (histories shuffled)", "controls", ["calrec-shuffled"]),
    ("the baselines, same users", "baselines", ["pop", "itemknn", "bm25-text", "sasrec"]),
]
READS = {1: "higher", -1: "lower", 0: "not separated"}


def findings_markdown(root: Path) -> str:
    suite = load_suite(SUITE)
    runs, missing = load_runs(suite, root, DATASET)
    tables = dataset_tables(suite, DATASET, runs, missing)  # as `bench table` builds them: same tests and families
    label = lambda key: suite.variant(key).label  # noqa: E731
    body = []
    for question, table, rows in QUESTIONS:
        t = tables[f"{DATASET}-ablation-{table}"]
        ref = suite.ablations[table][0]
        if unknown := sorted(set(rows) - set(suite.ablations[table][1:])):  # rows no test of that table can give
            raise BenchError(f"{suite.path}: ablations.{table} does not test {unknown}, which the README's findings "
                             "read (bench/report/findings.py QUESTIONS)")
        tested = {c.row: c for c in t.tests if c.metric == METRIC}
        for i, r in enumerate(rows):
            first = question if i == 0 else ""
            c = tested.get(r)
            if c is None:
                body.append([first, f"{label(r)} vs {label(ref)}", "not run", "", "", "", "", ""])
                continue
            low, high = c.interval()
            body.append([first, f"{label(r)} vs {label(ref)}", ", ".join(map(str, c.seeds)),
                         f"{c.row_mean:.4f} vs {c.reference_mean:.4f}", f"{c.difference:+.4f} [{low:+.4f}, {high:+.4f}]",
                         f"{_p(c.p)} ({KIND[c.kind]})", _p(c.p_holm), READS[c.significant]])
    head = ["question", "row vs reference", "seeds", f"{METRIC}", "difference [95% CI]", "p (test)", "p (Holm)", "reads"]
    table = tabulate(body, headers=head, tablefmt="pipe", disable_numparse=True)
    note = ("Stage II only trains all three losses; contrastive only ranks by the dense towers; the paper's inference is "
            "QRR (10 samples, T = 0.7, BM25), its setup adds its template, the full vocabulary and NIG on the last item "
            "on the same CPU time. "
            f"{DATASET}, all test users, the `{SUITE}` suite; {METRIC} of each row and of its reference over the seeds "
            f"tested (per-seed means paired seed by seed where both have three seeds, else per user over the shared "
            f"seeds); Holm within the {METRIC} column of the row's ablation table; reads: the Holm-adjusted test at "
            f"alpha = {ALPHA}. Every test: `results/tables/{SUITE}/{DATASET}-tests.md`.")
    return f"{table}\n\n{note}\n"

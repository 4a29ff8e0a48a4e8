"""The README's findings table: what CALRec's ablation shows, question by question, each row read
against its ablation table's reference with the test, interval, p and Holm p that
`results/tables/ablation/<dataset>-tests.md` prints (the same function computes both). Generated
like the headline table, so the front page's claims cannot drift from the stored runs:
`python -m bench headline` writes both blocks and `bench check --readme` compares both.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from tabulate import tabulate

from bench.errors import BenchError
from bench.report.comparisons import KIND, Comparison, _p
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


def findings(root: Path) -> list[tuple[str, str, str, Comparison | str]]:
    """(question or "" after a question's first row, row label, reference label, its test on METRIC
    or why there is none: "not run" (the row or its reference), "no seed shared"), in QUESTIONS' order."""
    suite = load_suite(SUITE)
    runs, missing = load_runs(suite, root, DATASET)
    tables = dataset_tables(suite, DATASET, runs, missing)  # as `bench table` builds them: same tests and families
    label = lambda key: suite.variant(key).label  # noqa: E731
    out = []
    for question, table, rows in QUESTIONS:
        ref = suite.ablations[table][0]
        if unknown := sorted(set(rows) - set(suite.ablations[table][1:])):  # rows no test of that table can give
            raise BenchError(f"{suite.path}: ablations.{table} does not test {unknown}, which the README's findings "
                             "read (bench/report/findings.py QUESTIONS)")
        tested = {c.row: c for c in tables[f"{DATASET}-ablation-{table}"].tests if c.metric == METRIC}
        for i, r in enumerate(rows):
            why = "no seed shared" if r in runs and ref in runs else "not run"
            out.append((question if i == 0 else "", label(r), label(ref), tested.get(r, why)))
    return out


def findings_markdown(root: Path) -> str:
    body = []
    for question, row, ref, c in findings(root):
        if isinstance(c, str):
            body.append([question, f"{row} vs {ref}", c, "", "", "", "", ""])
            continue
        low, high = c.interval()
        body.append([question, f"{row} vs {ref}", ", ".join(map(str, c.seeds)),
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
    return f"{table}\n\n{textwrap.fill(note, 118)}\n"


def findings_plot(root: Path, out: Path) -> list[Path]:
    """The findings as a forest plot: each row's NDCG@10 difference from its reference with its 95%
    interval, coloured by what the Holm-adjusted test reads, grouped by question."""
    from bench.report.plots import _save, plt

    found = [f for f in findings(root) if not isinstance(f[3], str)]
    if not found:
        return []
    colour = {1: "tab:green", -1: "tab:red", 0: "tab:gray"}
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(found) + 1.2))
    for y, (question, row, ref, c) in enumerate(found):
        low, high = c.interval()
        ax.errorbar(c.difference, y, xerr=[[c.difference - low], [high - c.difference]], fmt="o", capsize=3,
                    color=colour[c.significant])
        if question:
            if y:
                ax.axhline(y - 0.5, color="0.85", linewidth=0.8)
            ax.text(1.02, y, question, transform=ax.get_yaxis_transform(), fontsize=7, style="italic", va="center")
    ax.set_yticks(range(len(found)), [f"{row} vs {ref}" for _, row, ref, _ in found], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"{METRIC}: row minus reference (95% interval)")
    ax.set_title(f"{DATASET}: what the ablation shows (red: lower, green: higher, grey: not separated; Holm)",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out / f"{DATASET}-findings")

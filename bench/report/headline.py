"""The README's generated blocks: the headline table (the main models on ML-100k and ML-1M:
Recall@10, NDCG@10, seeds) and the ablation's findings (bench/report/findings.py), built from the
stored runs of the committed suites, so they cannot drift from the tables: `python -m bench
headline` rewrites each block between its markers and `bench check --readme README.md` fails where
one differs from what the runs give.
"""
from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from bench.errors import BenchError
from bench.report.notes import CAPPED
from bench.report.results import capped, load_runs
from bench.suites.load import load_suite

START, END = "<!-- headline:start (python -m bench headline) -->", "<!-- headline:end -->"
# (suite, variant) rows, in order: the `full` suite's main models, then CALRec's CPU recipe of the
# `ablation` suite on equal budgets, stage II alone and I+II (the same ML-100k split, all 943 test users).
ROWS = [("full", v) for v in ("pop", "itemknn", "bm25-text", "sasrec", "bert4rec", "recbole-sasrec", "recbole-gru4rec",
                              "recbole-caser", "recbole-stamp", "calrec")] + [("ablation", "calrec-ii"), ("ablation", "calrec-i-ii")]
DATASETS = ("ml-100k", "ml-1m")
METRICS = ("Recall@10", "NDCG@10")


def _cell(vr, metric: str) -> str:
    m = vr.seed_means(metric)
    return f"{m.mean():.3f}" + (f" ±{m.std(ddof=1):.3f}" if len(m) > 1 else "")


def headline_markdown(root: Path) -> str:
    runs = {}
    for suite_name in sorted({s for s, _ in ROWS}):
        suite = load_suite(suite_name)
        for d in DATASETS:
            if any(e.key == d for e in suite.datasets):
                runs[(suite_name, d)] = (suite, load_runs(suite, root, d)[0])
    body, flagged = [], []
    for suite_name, variant in ROWS:
        cells, label, seen = [], None, False
        for d in DATASETS:
            suite, got = runs.get((suite_name, d), (None, {}))
            vr = got.get(variant)
            if vr is None:
                cells += ["–"] * (len(METRICS) + 1)
                continue
            seen, label = True, suite.variant(variant).label
            cells += [_cell(vr, m) for m in METRICS] + [str(len(vr.seeds))]
            if any(capped(r) for r in vr.records):
                label += f" {CAPPED}"
            if any(not (r.get("code") or {}).get("fingerprint") for r in vr.records):
                flagged.append(f"{suite.variant(variant).label} ({d})")
        if seen:
            body.append([f"{label} [{suite_name}]", *cells])
    head = ["Model [suite]"] + [f"{d} {m}" for d in DATASETS for m in (*METRICS, "seeds")]
    table = tabulate(body, headers=head, tablefmt="pipe", disable_numparse=True)
    note = ("Mean over seeds (± sd), all test users (943 on ML-100k, 6,040 on ML-1M), history masked; "
            f"{CAPPED}: training ended at its budget. Full tables with significance: `results/tables/`.")
    if flagged:
        note += " Computed before code fingerprints (their code may not reproduce them): " + ", ".join(flagged) + "."
    return f"{table}\n\n{note}\n"


def replace_block(text: str, block: str, path: Path, name: str = "headline", start: str = START, end: str = END) -> str:
    if start not in text or end not in text:
        raise BenchError(f"{path}: no {name} markers ({start} ... {end})")
    if text.count(start) != 1 or text.count(end) != 1:  # a second copy would go unchecked and unwritten
        raise BenchError(f"{path}: the {name} markers appear more than once ({text.count(start)} x {start}, "
                         f"{text.count(end)} x {end}); keep one block")
    if text.index(end) < text.index(start):
        raise BenchError(f"{path}: the {name} end marker comes before its start marker")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}{end}{tail}"


def _blocks():
    """(name, start marker, end marker, what writes it from the results folder) of each generated block."""
    from bench.report import findings

    return [("headline", START, END, headline_markdown),
            ("findings", findings.START, findings.END, findings.findings_markdown)]


def _read_page(page: Path) -> str:
    if not page.is_file():
        raise BenchError(f"{page}: " + ("is not a file" if page.exists() else "no such file") + "; name the README to check or rewrite")
    try:
        return page.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"{page}: cannot be read as UTF-8 text ({type(e).__name__})") from None


def _rewritten(readme: Path, root: Path) -> tuple[str, list[str]]:
    new = _read_page(readme)
    differs = []
    for name, start, end, render in _blocks():
        replaced = replace_block(new, render(root), readme, name, start, end)
        if replaced != new:
            differs.append(name)
        new = replaced
    return new, differs


def pages(readme: Path) -> list[Path]:
    """The README and, beside it, the docs site's front page where it carries the same blocks."""
    index = readme.parent / "docs" / "index.md"
    return [readme] + ([index] if index.is_file() and START in index.read_text(encoding="utf-8") else [])


def check_readme(readme: Path, root: Path) -> list[str]:
    return [f"{page}: the {name} table differs from the stored runs (python -m bench headline rewrites it)"
            for page in pages(readme) for name in _rewritten(page, root)[1]]


def write_readme(readme: Path, root: Path) -> None:
    from bench.execute.store import atomic_write_text

    for page in pages(readme):
        atomic_write_text(page, _rewritten(page, root)[0])

"""Result tables in markdown and LaTeX (booktabs), built only from stored runs.

Each table: models x metrics (mean over seeds of the per-user mean, ± the standard deviation over
seeds where a row has several) and each row's number of seeds. Best in bold, second underlined,
decided on the printed values (rows that print the same share the mark). An arrow where the paired
test against the table's reference row survives Holm's correction: up where the row is higher,
down where lower. A row is tested on the seeds it shares with the reference (per-user values
averaged over those seeds), never a three-seed mean against one seed. One Holm family is one metric
column: the rows compared with the reference on that metric. A protocol note under each table says
all this. A row whose training ended at its budget rather than by early stopping is marked ‡.
With `ci`, each value also carries its 95% percentile-bootstrap interval over users (per-user values
averaged over the row's seeds; files named *-ci). Output is a pure function of the stored runs, so
`bench check` can rebuild committed tables byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.report.breakdowns import breakdown_files
from bench.report.comparisons import Comparison, compare_rows, tests_file
from bench.report.costs import cost_markdown
from bench.execute.fingerprint import staleness
from bench.report.memorisation import memorisation_markdown, memorisation_note
from bench.report.notes import CAPPED, CI_NOTE, DOWN, PARTIAL, UP, protocol_notes
from bench.report.published import load_published, published_markdown
from bench.report.results import Missing, VariantRuns, capped, load_runs
from bench.report.seeds import seeds_markdown
from bench.report.stats import bootstrap_ci, relative_improvement
from bench.suites.load import Suite

DECIMALS = 4
FLAGGED = "†"  # the improvement row rests on cells the notes flag


def table_metrics(ks) -> list[str]:
    # NDCG@1 equals Recall@1 under leave-one-out, so it is left out.
    return [f"Recall@{k}" for k in ks] + [f"NDCG@{k}" for k in ks if k > 1] + ["MRR"]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[str]  # row labels
    values: np.ndarray  # rows x columns, nan where missing
    spread: np.ndarray  # rows x columns: standard deviation over seeds (nan with one seed)
    significant: np.ndarray  # rows x columns: +1 significantly higher than the reference, -1 lower, 0 not
    headline: list[float] | None  # relative improvement of the studied method's best row over the best baseline
    notes: list[str]
    n_seeds: list[int]
    capped: list[bool]
    ci: np.ndarray | None = None  # rows x columns x (low, high): 95% bootstrap interval over users
    partial: list[bool] | None = None  # tested on fewer seeds than the reference ran (marked PARTIAL)
    headline_flagged: bool = False  # the improvement row rests on flagged cells (marked FLAGGED)
    reference: str | None = None  # the row the arrows compare with (variant key)
    tests: list[Comparison] = field(default_factory=list)  # what the arrows come from
    reference_row: int | None = None  # its index in `rows`, marked "(reference)" where the table prints


def build_table(suite: Suite, runs: dict[str, VariantRuns], rows: list[str], reference: str | None,
                title: str, test: str, missing: Missing, headline: bool, ci: bool = False, family: str = "column") -> Table:
    metrics = table_metrics(suite.ks)
    rows = [r for r in rows if r in runs]
    values = np.full((len(rows), len(metrics)), np.nan)
    spread = np.full_like(values, np.nan)
    for i, r in enumerate(rows):
        for j, m in enumerate(metrics):
            per_seed = runs[r].seed_means(m)
            values[i, j] = per_seed.mean()
            if len(per_seed) > 1:
                spread[i, j] = per_seed.std(ddof=1)
    intervals = None
    if ci:
        intervals = np.full((*values.shape, 2), np.nan)
        for i, r in enumerate(rows):
            for j, m in enumerate(metrics):
                intervals[i, j] = bootstrap_ci(runs[r].user_metric(m, suite.ks))
    significant = np.zeros(values.shape, dtype=int)
    tests = compare_rows(suite, runs, rows, reference, metrics, test, family) if reference in rows else []
    for c in tests:
        significant[rows.index(c.row), metrics.index(c.metric)] = c.significant
    kinds = {c.row: c.kind for c in tests}  # row -> which test its arrows come from
    per_metric = [sum(c.metric == m for c in tests) for m in metrics]
    tested = {"family": family, "size": max(per_metric, default=0) if family == "column" else len(tests),
              "total": len(tests), "kinds": kinds}
    head = None
    groups = {r: suite.variant(r).group for r in rows}
    ours = [i for i, r in enumerate(rows) if groups[r] == "ours"]
    base = [i for i, r in enumerate(rows) if groups[r] != "ours"]
    head_flagged: list[str] = []
    if headline and ours and base:
        head = [relative_improvement(values[ours, j].max(), values[base, j].max()) for j in range(len(metrics))]
        # the rows the improvement is computed from, column by column: is any of them flagged?
        used = {rows[idx[int(np.nanargmax(values[idx, j]))]] for idx in (ours, base) for j in range(len(metrics))
                if not np.all(np.isnan(values[idx, j]))}
        head_flagged = [suite.variant(r).label for r in rows if r in used and any(staleness(rec) for rec in runs[r].records)]
    cut = [any(capped(rec) for rec in runs[r].records) for r in rows]
    notes = protocol_notes(suite, runs, rows, reference, test, tested, missing, cut, ci)
    if head is not None:  # say which rows the Improvement row compares: it may be a weak or one-seed one
        used_ours = [rows[i] for i in ours if any(not np.all(np.isnan(values[ours, j])) and
                                                  ours[int(np.nanargmax(values[ours, j]))] == i for j in range(len(metrics)))]
        notes.append("Improvement: the best row of the studied method against the best baseline row, metric by metric; "
                     "here the studied method's best is " + ", ".join(
                         f"{suite.variant(r).label} ({len(runs[r].seeds)} seed{'s' if len(runs[r].seeds) != 1 else ''})"
                         for r in used_ours) + ": the rows this table holds, not the method at its best.")
    if head_flagged:
        notes.append(f"{FLAGGED}: the Improvement row is computed from rows with flagged cells (computed by code that "
                     f"has changed since, or before code fingerprints; see the notes above): {', '.join(head_flagged)}.")
    labels = [suite.variant(r).label for r in rows]
    ref_seeds = set(runs[reference].seeds) if reference in rows else set()
    partial = [kinds.get(r) == "users" and len(set(runs[r].seeds) & ref_seeds) < len(ref_seeds) for r in rows]
    return Table(title, metrics, labels, values, spread, significant, head, notes, [len(runs[r].seeds) for r in rows],
                 cut, intervals, partial, bool(head_flagged), reference if tests else None, tests,
                 rows.index(reference) if tests and reference in rows else None)


def _printed(v: float) -> str:
    return "–" if np.isnan(v) else f"{v:.{DECIMALS}f}"


def _marks(col: np.ndarray) -> tuple[str | None, str | None]:
    """The best and second-best printed values of a column (ties share a mark)."""
    shown = sorted({float(_printed(v)) for v in col if not np.isnan(v)}, reverse=True)
    best = _printed(shown[0]) if shown else None
    second = _printed(shown[1]) if len(shown) > 1 else None
    return best, second


def _cells(t: Table, bold, underline, arrows, fmt_sd, cap) -> list[list[str]]:
    out = []
    marks = [_marks(t.values[:, j]) for j in range(len(t.columns))]
    for i, label in enumerate(t.rows):
        row = [label + (" (reference)" if i == t.reference_row else "") + (cap if t.capped[i] else "")
               + (f" {PARTIAL}" if t.partial and t.partial[i] else ""), str(t.n_seeds[i])]
        for j in range(len(t.columns)):
            s = _printed(t.values[i, j])
            best, second = marks[j]
            if s == best:
                s = bold(s)
            elif s == second:
                s = underline(s)
            if not np.isnan(t.spread[i, j]):
                s += fmt_sd(f"{t.spread[i, j]:.{DECIMALS}f}")
            if t.significant[i, j]:
                s += arrows[int(t.significant[i, j] < 0)]
            if t.ci is not None and not np.isnan(t.ci[i, j, 0]):
                s += f" [{t.ci[i, j, 0]:.{DECIMALS}f}, {t.ci[i, j, 1]:.{DECIMALS}f}]"
            row.append(s)
        out.append(row)
    if t.headline is not None:
        out.append(["Improvement (best row of the studied method vs best baseline row)" + (f" {FLAGGED}" if t.headline_flagged else ""), ""]
                   + ["–" if np.isnan(h) else f"{h * 100:+.1f}%" for h in t.headline])
    return out


def to_markdown(t: Table) -> str:
    cells = _cells(t, lambda s: f"**{s}**", lambda s: f"<u>{s}</u>", (UP, DOWN), lambda sd: f" ±{sd}", f" {CAPPED}")
    body = tabulate(cells, headers=["Model", "Seeds", *t.columns], tablefmt="pipe", disable_numparse=True,
                    colalign=("left",) + ("right",) * (len(t.columns) + 1))
    return f"### {t.title}\n\n{body}\n\n" + "\n".join(f"- {n}" for n in t.notes) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in s)  # one pass: an escape's own braces are not escaped again


def to_latex(t: Table) -> str:
    cells = _cells(t, lambda s: rf"\textbf{{{s}}}", lambda s: rf"\underline{{{s}}}", (r"$^\uparrow$", r"$^\downarrow$"),
                   lambda sd: rf"{{\scriptsize $\pm${sd}}}", CAPPED)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_tex(t.title)}}}",
             r"\begin{tabular}{lr" + "r" * len(t.columns) + "}", r"\toprule",
             " & ".join(["Model", "Seeds", *(_tex(c) for c in t.columns)]) + r" \\", r"\midrule"]
    for k, row in enumerate(cells):
        if t.headline is not None and k == len(cells) - 1:
            lines.append(r"\midrule")
        lines.append(" & ".join([_tex(row[0]).replace(CAPPED, r"$^\ddagger$").replace(PARTIAL, r"\S{}").replace(FLAGGED, r"$^\dagger$"),
                                 *(c.replace("%", r"\%").replace("–", "--") for c in row[1:])]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize "
              + " ".join(_tex(n).replace(UP, r"$\uparrow$").replace(DOWN, r"$\downarrow$").replace(CAPPED, r"$\ddagger$")
                         .replace(PARTIAL, r"\S{}").replace(FLAGGED, r"$\dagger$")
                         for n in t.notes) + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def dataset_tables(suite: Suite, dataset: str, runs: dict[str, VariantRuns], missing: Missing,
                   test: str = "t-test", ci: bool = False, family: str = "column") -> dict[str, Table]:
    """One dataset's tables: the main table and one per declared ablation group."""
    tables = {f"{dataset}-main": build_table(suite, runs, [v.key for v in suite.variants], suite.reference,
                                             f"{suite.name}: {dataset}, all models", test, missing, headline=True, ci=ci,
                                             family=family)}
    for name, rows in suite.ablations.items():
        if not all(suite.variant(r).runs_on(dataset) for r in rows):
            continue  # a row that does not run on this dataset (a variant tuned on another one)
        miss = Missing(*([m for m in names if m.split("/")[1] in rows] for names in (missing.cells, missing.other_data)))
        tables[f"{dataset}-ablation-{name}"] = build_table(suite, runs, rows, rows[0], f"{suite.name}: {dataset}, ablation: {name}",
                                                           test, miss, headline=False, ci=ci, family=family)
    return tables


def render_tables(suite: Suite, root: Path, test: str = "t-test", ci: bool = False, plain: bool = True,
                  family: str = "column", also: tuple[Path, ...] = ()) -> dict[str, str]:
    """File name -> content, for results/tables/<suite>/, from one read of the stored runs: per
    dataset, with `plain`, its metric tables (markdown and LaTeX), cost table, per-seed table (suites
    with several seeds) and published-numbers table; with `ci`, the metric tables with bootstrap intervals, named *-ci (each table is built
    once and rendered both ways)."""
    out = {}
    pub = load_published(suite.published) if suite.published else None
    for d in suite.datasets:
        runs, missing = load_runs(suite, root, d.key, also)
        llm_note = memorisation_note(suite, root, d.key)  # tables with LLM rows say how much the LLM knew
        model_of = {v.label: v.model for v in suite.variants}
        tables = dataset_tables(suite, d.key, runs, missing, test, ci, family)
        for key, t in tables.items():
            if llm_note and any(model_of.get(label) == "calrec" for label in t.rows):
                t.notes.append(llm_note)
            if plain:
                bare = replace(t, ci=None, notes=[n for n in t.notes if n != CI_NOTE])
                out[f"{key}.md"], out[f"{key}.tex"] = to_markdown(bare), to_latex(bare)
            if ci:
                out[f"{key}-ci.md"], out[f"{key}-ci.tex"] = to_markdown(t), to_latex(t)
        if runs and plain:
            out[f"{d.key}-cost.md"] = cost_markdown(suite, d.key, runs)
            if (by_seed := seeds_markdown(suite, d.key, runs)) is not None:
                out[f"{d.key}-seeds.md"] = by_seed
            if (tested := tests_file(suite, list(tables.values()), test, family)) is not None:
                out[f"{d.key}-tests.md"] = tested
            split = _split_or_none(d)
            if split is not None:  # the paper suite without its Amazon files has no split here
                out.update(breakdown_files(suite, d.key, runs, split))
            mem = memorisation_markdown(suite, root, d.key)
            if mem is not None:
                out[f"{d.key}-memorisation.md"] = mem
        if pub is not None and d.key in pub.targets and plain:
            out[f"{d.key}-published.md"] = published_markdown(suite, d.key, runs, pub)
    return out


def _split_or_none(entry):
    from bench.errors import BenchError
    from bench.execute.runner import get_split

    try:
        return get_split(entry)
    except BenchError:
        return None


def suite_tables(suite: Suite, root: Path, also: tuple[Path, ...] = ()) -> dict[str, str]:
    """What results/tables/<suite>/ should hold: the plain tables, and the *-ci ones where that
    folder already has some (bootstrapping every cell is the slow part, so they are opt-in)."""
    folder = Path(root) / "tables" / suite.name
    return render_tables(suite, root, ci=folder.is_dir() and any(p.stem.endswith("-ci") for p in folder.iterdir()),
                         also=also)

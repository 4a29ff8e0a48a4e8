"""Every cell of a multi-seed suite, seed by seed: NDCG@10 / Recall@10 of each row at each seed, and
where and at what precision each cell ran. The metric tables average seeds away; this one shows how
far apart they are and which cells a reader would rerun. A pure function of the stored runs."""
from __future__ import annotations

from string import ascii_lowercase

import numpy as np
from tabulate import tabulate

from bench.report.costs import device
from bench.report.notes import precision
from bench.report.results import REPORTED as METRICS, VariantRuns
from bench.suites.load import Suite


def _where(record: dict) -> str:
    p = precision(record)
    return device(record) + (f", {p}" if p else "")


def seeds_markdown(suite: Suite, dataset: str, runs: dict[str, VariantRuns]) -> str | None:
    """The per-seed table of one dataset; None for a one-seed suite (the main table says it all)."""
    if len(suite.seeds) < 2 or not runs:
        return None
    places: dict[str, str] = {}  # machine and precision -> its footnote letter, in order of appearance
    rows = []
    for v in suite.variants:
        if not v.runs_on(dataset):
            continue
        vr = runs.get(v.key) or VariantRuns(v.key, [], [], [])
        planned = v.seeds if v.seeds is not None else suite.seeds
        row = [v.label]
        for s in suite.seeds:
            if s not in vr.seeds:
                row.append("–" if s in planned else "")
                continue
            i = vr.seeds.index(s)
            mark = places.setdefault(_where(vr.records[i]), ascii_lowercase[len(places) % 26])
            row.append(" / ".join(f"{vr.metrics[i][m]:.4f}" for m in METRICS) + f" ({mark})")
        ndcg = np.array([m[METRICS[0]] for m in vr.metrics])
        row += [f"{ndcg.mean():.4f}" if len(ndcg) else "–", f"{ndcg.std(ddof=1):.4f}" if len(ndcg) > 1 else "–"]
        rows.append(row)
    headers = ["Model", *(f"seed {s}" for s in suite.seeds), f"Mean {METRICS[0]}", "SD over seeds"]
    body = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=("left",) + ("right",) * (len(headers) - 1))
    legend = "; ".join(f"({mark}) {where}" for where, mark in places.items())
    return (f"### {suite.name}: {dataset}, every cell by seed\n\n{body}\n\n"
            f"- Each cell: {' / '.join(METRICS)} over the suite's test users, from its `metrics.json`; – where the seed "
            "has not run yet, blank where the suite does not run it (a row whose scores ignore the seed runs once). Mean and SD are "
            "over the seeds a row ran. The metric "
            "tables beside this one give the other metrics, the tests and the notes.\n"
            f"- Where each cell ran and, for models that record it, at what precision: {legend}.\n")

"""Where each model wins: metrics per group of test users, from the per-user records every cell stores.

Two groupings (RecBole users have asked for both for years):
  target popularity  the test item's training interactions: head / middle / tail are the items that
                     make up the first, second and last third of all training interactions (items
                     sorted by popularity; an item is never split), cold = never in training
  history length     the length of the user's test-time history (training + validation item),
                     in quartiles of the evaluated users
Each cell: the mean over the row's seeds of the per-user metric, its 95% percentile-bootstrap
interval over the group's users, and an arrow where the paired t-test against the reference row
(on the seeds the two share, within the group) survives Holm's correction over the rows of that
column. A pure function of the stored runs and the dataset's split, like the other tables.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.report.notes import ALPHA, DOWN, UP
from bench.report.results import VariantRuns
from bench.split import Split
from bench.report.stats import bootstrap_ci, holm, paired_pvalue
from bench.suites.load import Suite

METRICS = ("Recall@10", "NDCG@10")
POPULARITY = ("head", "middle", "tail", "cold")


def popularity_groups(split: Split) -> dict[str, str]:
    """Raw item id -> head / middle / tail / cold, by equal thirds of training interactions."""
    counts = np.bincount(np.concatenate(split.train), minlength=split.n_items)
    order = np.argsort(-counts, kind="stable")
    before = np.cumsum(counts[order]) - counts[order]  # interactions of the more popular items
    share = before / max(int(counts.sum()), 1)
    group = np.where(share < 1 / 3, "head", np.where(share < 2 / 3, "middle", "tail"))
    out = {str(split.item_ids[i]): g for i, g in zip(order, group)}
    out.update({str(split.item_ids[i]): "cold" for i in np.flatnonzero(counts == 0)})
    return out


def history_groups(split: Split, users: list[str]) -> tuple[dict[str, str], list[str]]:
    """Raw user id -> its history-length quartile among `users` (labelled with the lengths it holds)."""
    index = {str(u): k for k, u in enumerate(split.user_ids)}
    length = pd.Series({u: len(split.train[index[u]]) + 1 for u in users})
    quartile = pd.qcut(length.rank(method="first"), 4, labels=False)
    labels = {q: f"Q{q + 1} ({length[quartile == q].min()}-{length[quartile == q].max()})" for q in range(4)}
    return {u: labels[q] for u, q in quartile.items()}, [labels[q] for q in range(4)]


def _per_user(vr: VariantRuns, metric: str, ks, seeds) -> pd.Series:
    frames = [pd.Series(vr.user_metric(metric, ks, [s]), index=sorted(vr.per_user[i]["user"].astype(str)))
              for i, s in enumerate(vr.seeds) if s in seeds]
    return pd.concat(frames, axis=1).mean(axis=1)


def breakdown(suite: Suite, runs: dict[str, VariantRuns], rows: list[str], reference: str | None,
              group_of: dict[str, str], groups: list[str]) -> dict:
    """Per row and group: users, mean, interval and the test's sign, for each metric."""
    rows = [r for r in rows if r in runs]
    users = sorted(runs[rows[0]].per_user[0]["user"].astype(str)) if rows else []
    member = pd.Series({u: group_of.get(u) for u in users})
    out = {"rows": rows, "groups": [g for g in groups if (member == g).any()], "cells": {}, "tests": 0}
    out["users"] = {g: int((member == g).sum()) for g in out["groups"]}
    for metric in METRICS:
        values = {r: _per_user(runs[r], metric, suite.ks, runs[r].seeds) for r in rows}
        # each row's and the reference's per-user values on the seeds they share, once per metric
        pairs = {}
        for r in rows:
            shared = [s for s in runs[r].seeds if reference in runs and s in runs[reference].seeds]
            if r != reference and shared:
                pairs[r] = (_per_user(runs[r], metric, suite.ks, shared), _per_user(runs[reference], metric, suite.ks, shared))
        for g in out["groups"]:
            ids = member.index[member == g]
            cmp, pvals = [], []
            for r in rows:
                x = values[r][ids].to_numpy()
                out["cells"][(r, g, metric)] = {"mean": float(x.mean()), "ci": bootstrap_ci(x), "sign": 0}
                if r not in pairs:
                    continue
                a, b = (v[ids].to_numpy() for v in pairs[r])
                cmp.append((r, float(a.mean() - b.mean())))
                pvals.append(paired_pvalue(a, b))
            _, reject = holm(pvals, ALPHA)
            out["tests"] = max(out["tests"], len(pvals))
            for (r, diff), rej in zip(cmp, reject):
                out["cells"][(r, g, metric)]["sign"] = int(np.sign(diff)) if rej else 0
    return out


def render(suite: Suite, b: dict, title: str, how: str, reference: str | None, latex: bool) -> str:
    label = {r: suite.variant(r).label for r in b["rows"]}
    head = ["Model"] + [f"{m} {g} (n={b['users'][g]})" for m in METRICS for g in b["groups"]]
    body = []
    for r in b["rows"]:
        row = [label[r]]
        for m in METRICS:
            for g in b["groups"]:
                c = b["cells"][(r, g, m)]
                arrow = {1: r"$^\uparrow$" if latex else UP, -1: r"$^\downarrow$" if latex else DOWN}.get(c["sign"], "")
                row.append(f"{c['mean']:.4f}{arrow} [{c['ci'][0]:.4f}, {c['ci'][1]:.4f}]")
        body.append(row)
    ref = label.get(reference, "none")
    notes = [how, "[low, high]: 95% percentile-bootstrap interval over the group's users (2000 resamples, seed 0; "
             "per-user values averaged over the row's seeds).",
             f"↑/↓: higher/lower than {ref} by a paired t-test within the group, on the seeds the two rows share, "
             f"Holm-corrected over the rows of each column (a family of {b['tests']} comparisons), alpha={ALPHA}."]
    if latex:
        esc = lambda s: s.replace("%", r"\%").replace("_", r"\_").replace("&", r"\&").replace("#", r"\#")
        lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", rf"\caption{{{esc(title)}}}",
                 r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule", " & ".join(map(esc, head)) + r" \\",
                 r"\midrule"] + [" & ".join([esc(row[0]), *row[1:]]) + r" \\" for row in body]
        lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize "
                  + " ".join(esc(n).replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$") for n in notes) + "}",
                  r"\end{table}"]
        return "\n".join(lines) + "\n"
    table = tabulate(body, headers=head, tablefmt="pipe", disable_numparse=True)
    return f"### {title}\n\n{table}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


POPULARITY_NOTE = ("Groups by the test item's training interactions: head, middle and tail are the items that make up "
                   "the first, second and last third of all training interactions (items sorted by popularity, none "
                   "split); cold items never occur in training.")
HISTORY_NOTE = "Groups by the length of the user's test-time history (training items + the validation item), in quartiles of the evaluated users."


def breakdown_tables(suite: Suite, dataset: str, runs: dict[str, VariantRuns], split: Split) -> dict[str, dict]:
    """name -> the breakdown data of the dataset's main rows, by target popularity and history length."""
    rows = [v.key for v in suite.variants if v.key in runs]
    if not rows:
        return {}
    users = sorted(runs[rows[0]].per_user[0]["user"].astype(str))
    index = {str(u): k for k, u in enumerate(split.user_ids)}
    target = {u: str(split.item_ids[split.test[index[u]]]) for u in users}
    pop = popularity_groups(split)
    by_length, length_labels = history_groups(split, users)
    return {
        "popularity": breakdown(suite, runs, rows, suite.reference, {u: pop[t] for u, t in target.items()}, list(POPULARITY)),
        "history": breakdown(suite, runs, rows, suite.reference, by_length, length_labels),
    }


def breakdown_files(suite: Suite, dataset: str, runs: dict[str, VariantRuns], split: Split) -> dict[str, str]:
    out = {}
    for name, b in breakdown_tables(suite, dataset, runs, split).items():
        how = POPULARITY_NOTE if name == "popularity" else HISTORY_NOTE
        title = f"{suite.name}: {dataset}, by {'target popularity' if name == 'popularity' else 'history length'}"
        out[f"{dataset}-by-{name}.md"] = render(suite, b, title, how, suite.reference, latex=False)
        out[f"{dataset}-by-{name}.tex"] = render(suite, b, title, how, suite.reference, latex=True)
    return out

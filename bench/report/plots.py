"""Plots from stored runs (PNG and PDF): metric@K curves, ablation bars with bootstrap CIs,
training curves, the ablation findings as a forest plot (bench/report/findings.py).
`python -m bench plot --suite NAME` writes them to results/plots/<suite>/."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.evaluate import metrics_from_ranks  # noqa: E402
from bench.execute.fingerprint import staleness  # noqa: E402
from bench.report.findings import METRIC, findings  # noqa: E402
from bench.report.results import Missing, VariantRuns, load_runs  # noqa: E402
from bench.report.stats import bootstrap_ci  # noqa: E402
from bench.execute.store import RunStore  # noqa: E402
from bench.suites.load import Suite  # noqa: E402

CURVE_KS = list(range(1, 51))


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = path.with_suffix(f".{ext}")
        fig.savefig(p, dpi=130, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        out.append(p)
    plt.close(fig)
    return out


def _curve(vr: VariantRuns, metric: str) -> np.ndarray:
    per_seed = [np.array([metrics_from_ranks(vr.ranks(i), CURVE_KS)[f"{metric}@{k}"].mean() for k in CURVE_KS])
                for i in range(len(vr.per_user))]
    return np.mean(per_seed, axis=0)


def metric_at_k(suite: Suite, runs: dict[str, VariantRuns], dataset: str, out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = plt.cm.tab20(np.linspace(0, 1, 20))  # more models than the default 10-colour cycle
    for ax, metric in zip(axes, ("Recall", "NDCG")):
        for k, (key, vr) in enumerate(runs.items()):
            ours = suite.variant(key).group == "ours"
            ax.plot(CURVE_KS, _curve(vr, metric), label=suite.variant(key).label, color=colors[(2 * k) % 20 + (k // 10) % 2],
                    linestyle="-" if ours else "--", linewidth=2.2 if ours else 1.3)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_title(f"{dataset}: {metric}@K")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(fig, out / f"{dataset}-metric-at-k")


def ablation_bars(suite: Suite, runs: dict[str, VariantRuns], dataset: str, name: str, rows: list[str], out: Path,
                  metric: str = "NDCG@10") -> list[Path]:
    rows = [r for r in rows if r in runs]
    if not rows:
        return []
    means, lo, hi = [], [], []
    for r in rows:
        x = runs[r].user_metric(metric, suite.ks)
        a, b = bootstrap_ci(x)
        means.append(x.mean())
        lo.append(x.mean() - a)
        hi.append(b - x.mean())
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.5))
    old = [any(staleness(rec) for rec in runs[r].records) for r in rows]
    ax.bar(range(len(rows)), means, yerr=[lo, hi], capsize=4, color=["#a0a0a0" if o else "#4c72b0" for o in old])
    ax.set_xticks(range(len(rows)), [suite.variant(r).label + (" †" if o else "") for r, o in zip(rows, old)],
                  rotation=30, ha="right", fontsize=8)
    _seed_dots(ax, [runs[r] for r in rows], metric)
    if any(old):  # the table notes say which code; the plot must not pass such a bar off as current
        ax.set_xlabel("† grey: computed by older code or before fingerprints (see the table notes)", fontsize=7)
    _baseline_lines(ax, suite, runs, rows, metric)
    ax.set_ylabel(f"{metric}\n(bar: mean over seeds; 95% CI over users)", fontsize=8)
    ax.set_title(f"{dataset}: ablation {name}")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / f"{dataset}-ablation-{name}")


def _seed_dots(ax, rows: list[VariantRuns], metric: str) -> None:
    """Each seed's mean over users as a dot beside its bar: the bar's interval is over users only, and
    where seeds differ as much as rows do, the reader should see it."""
    shown = False
    for i, vr in enumerate(rows):
        values = vr.seed_means(metric)
        if len(values) < 2:
            continue
        ax.scatter(i + np.linspace(0.1, 0.3, len(values)), values, s=18, color="black", zorder=3,  # right of the whisker
                   label=None if shown else "one seed's mean")
        shown = True


def _baseline_lines(ax, suite: Suite, runs: dict[str, VariantRuns], rows: list[str], metric: str) -> None:
    """Popularity and the suite's reference model as horizontal lines, so a bar reads against what
    a model must beat to recommend at all (not only against its sibling variants)."""
    keys = [v.key for v in suite.variants if v.model == "pop"] + ([suite.reference] if suite.reference else [])
    styles = iter(("--", ":", "-."))
    for key in dict.fromkeys(k for k in keys if k in runs and k not in rows):
        value = float(runs[key].user_metric(metric, suite.ks).mean())
        ax.axhline(value, color="#c44e52", linestyle=next(styles, "--"), linewidth=1.2,
                   label=f"{suite.variant(key).label} {value:.4f}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")


def training_curves(suite: Suite, root: Path, dataset: str, out: Path) -> list[Path]:
    store, written, seen = RunStore(root), [], set()
    for v in suite.variants:
        for seed in v.seeds or suite.seeds:
            f = store.cell_dir(suite.name, dataset, v.key, seed) / "curves.csv"
            if not f.exists():
                continue
            raw = f.read_bytes()
            if raw in seen:  # variants sharing one trained model (CALRec's inference ablations) share its curve
                continue
            seen.add(raw)
            df = pd.read_csv(io.BytesIO(raw))
            x = "step" if "step" in df else "epoch"
            losses = [c for c in df.columns if c.startswith(("loss_", "train_loss"))]
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for c in losses:
                ax.plot(np.arange(len(df)) + 1, df[c], label=c, alpha=0.8)
            ax.set_xlabel(f"{x} (all stages in order)" if "stage" in df else x)
            ax.set_ylabel("training loss")
            _validation_axis(ax, df)
            if losses:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=2)  # below: curves fill the axes
            ax.set_title(f"{dataset} {v.label} seed {seed}")
            written += _save(fig, out / f"{dataset}-training-{v.key}-seed{seed}")
    return written


def _validation_axis(ax, df: pd.DataFrame) -> None:
    """The selection signal on a second axis: validation NLL per item beside popularity's and a
    uniform guess's on the same targets (what CALRec's recipe selects on), else validation NDCG@10."""
    rows = np.arange(len(df)) + 1
    if "valid_nll" in df and df["valid_nll"].notna().any():
        ax2, valid = ax.twinx(), df["valid_nll"].notna()
        ax2.plot(rows[valid], df.loc[valid, "valid_nll"], "k.-", label="valid NLL per item")
        for col, style, name in (("popularity_nll", "--", "popularity"), ("uniform_nll", ":", "uniform")):
            if col in df and df[col].notna().any():
                ax2.axhline(float(df[col].dropna().iloc[-1]), color="grey", linestyle=style, linewidth=1, label=name)
        ax2.set_ylabel("validation NLL per item (nats)")
        ax2.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1, -0.2))
    elif "valid_NDCG@10" in df and df["valid_NDCG@10"].notna().any():
        ax2, valid = ax.twinx(), df["valid_NDCG@10"].notna()
        ax2.plot(rows[valid], df.loc[valid, "valid_NDCG@10"], "k.-", label="valid NDCG@10")
        ax2.set_ylabel("validation NDCG@10")


def breakdown_plots(suite: Suite, runs: dict[str, VariantRuns], dataset: str, split, out: Path) -> list[Path]:
    """NDCG@10 per user group (target popularity, history length) for every row, with the
    bootstrap intervals of bench/report/breakdowns.py: where each model wins."""
    from bench.report.breakdowns import breakdown_tables

    written = []
    for name, b in breakdown_tables(suite, dataset, runs, split).items():
        fig, ax = plt.subplots(figsize=(8, 4.5))
        x = np.arange(len(b["groups"]))
        colours = plt.cm.tab20(np.linspace(0, 1, max(len(b["rows"]), 2)))  # more rows than the default cycle
        for k, r in enumerate(b["rows"]):
            cells = [b["cells"][(r, g, "NDCG@10")] for g in b["groups"]]
            mean = np.array([c["mean"] for c in cells])
            err = np.array([[c["mean"] - c["ci"][0], c["ci"][1] - c["mean"]] for c in cells]).T
            dodge = (k - (len(b["rows"]) - 1) / 2) * 0.2 / max(len(b["rows"]), 1)  # intervals side by side
            ax.errorbar(x + dodge, mean, yerr=err, marker="o", ms=4, capsize=2, lw=1, color=colours[k],
                        label=suite.variant(r).label)
        ax.set_xticks(x, [f"{g}\n(n={b['users'][g]})" for g in b["groups"]])
        ax.set_ylabel("NDCG@10 (95% bootstrap CI)")
        ax.set_title(f"{suite.name}: {dataset}, NDCG@10 by {'target popularity' if name == 'popularity' else 'history length'}",
                     fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
        written += _save(fig, out / f"{dataset}-by-{name}")
    return written


def plot_suite(suite: Suite, root: Path) -> list[Path]:
    out = root / "plots" / suite.name
    written: list[Path] = []
    for d in suite.datasets:
        runs, missing = load_runs(suite, root, d.key)
        if not runs:
            continue
        written += metric_at_k(suite, runs, d.key, out)
        for name, rows in suite.ablations.items():
            written += ablation_bars(suite, runs, d.key, name, rows, out)
        written += training_curves(suite, root, d.key, out)
        from bench.report.tables import _split_or_none

        split = _split_or_none(d)
        if split is not None:
            written += breakdown_plots(suite, runs, d.key, split, out)
        if suite.findings:  # what the ablation shows, question by question (the README's findings table)
            drawn = findings_plot(suite, d.key, runs, missing, out)
            written += drawn
            _to_docs_front_page(suite, d.key, root, drawn)
    return written


def findings_plot(suite: Suite, dataset: str, runs: dict[str, VariantRuns], missing: Missing, out: Path) -> list[Path]:
    """The findings as a forest plot: each row's NDCG@10 difference from its reference with its 95%
    interval, coloured by what the Holm-adjusted test reads, grouped by question."""
    found = [f for f in findings(suite, dataset, runs, missing) if not isinstance(f[3], str)]
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
    ax.set_xlabel(f"{METRIC}: row minus reference (unadjusted 95% interval)")
    ax.set_title(f"{dataset}: each question's rows against their reference\n(colour: the Holm-adjusted test; red lower, "
                 f"green higher, grey not separated; intervals are not adjusted)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out / f"{dataset}-findings")


def _to_docs_front_page(suite: Suite, dataset: str, root: Path, drawn: list[Path]) -> None:
    """The README's findings plot also on the docs site's front page (docs/img/findings.png), when
    the plots are those of this checkout's own results."""
    import shutil

    from bench.execute.fingerprint import ROOT
    from bench.report.findings import DATASET, SUITE

    png = [p for p in drawn if p.suffix == ".png"]
    if suite.name == SUITE and dataset == DATASET and png and Path(root).resolve() == (ROOT / "results").resolve():
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png[0], ROOT / "docs" / "img" / "findings.png")


def stale_plots(suite: Suite, out: Path, written: list[Path]) -> list[Path]:
    """The plots in `out` of a dataset drawn this time that were not drawn again: a row or table the suite
    no longer has, or a cell no longer stored. Left there, they would show numbers no run backs."""
    names = {p.name for p in written}
    keys = sorted((d.key for d in suite.datasets), key=len, reverse=True)  # ml-1m-x- before ml-1m-

    def dataset_of(name: str) -> str | None:
        return next((k for k in keys if name.startswith(f"{k}-")), None)

    drawn = {dataset_of(n) for n in names} - {None}
    return [p for p in (sorted(out.iterdir()) if out.is_dir() else [])
            if p.suffix in (".png", ".pdf") and p.is_file() and p.name not in names and dataset_of(p.name) in drawn]

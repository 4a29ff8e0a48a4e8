"""What a finished `bench tune` search leaves behind: the tuned variant in the suite's overlay (with
where its values came from, copied into each run.json), trials.csv and Optuna's plots."""
from __future__ import annotations

import warnings
from pathlib import Path

import yaml

from bench.errors import BenchError
from bench.execute.fingerprint import ROOT
from bench.execute.runner import git_commit
from bench.execute.store import atomic_write_text
from bench.execute.tune import Search, load_optuna, with_values
from bench.suites.load import overlay_path, update_overlay


def tuned_entry(search: Search, study, results: Path) -> dict:
    """The overlay's record of where the tuned parameters came from (copied into each run.json)."""
    optuna = load_optuna()
    best = study.best_trial
    states = [t.state for t in study.get_trials(deepcopy=False)]
    db = search.db_path(results)
    storage = str(db.relative_to(ROOT) if db.is_relative_to(ROOT) else db)
    if search.storage:
        from sqlalchemy.engine import make_url

        storage = make_url(search.storage).render_as_string(hide_password=True)
    return {
        "study": search.study_name, "storage": storage, "trial": best.number, "commit": git_commit(), "metric": f"valid {search.metric}",
        "value": round(float(best.value), 6), "params": dict(best.params),
        "trials": {s.name.lower(): states.count(s) for s in (optuna.trial.TrialState.COMPLETE,
                                                               optuna.trial.TrialState.PRUNED,
                                                               optuna.trial.TrialState.FAIL)},
    }


def write_overlay(search: Search, study, results: Path) -> Path:
    """Add (or replace) `<variant>-tuned` on this dataset in the suite's overlay, under a lock so
    searches in parallel processes do not lose each other's entries."""
    variant = search.suite.variant(search.variant)
    key = f"{variant.key}-tuned"
    path = overlay_path(results, search.suite.name)
    scored = overlay_path(results, search.suite.name, "scored")
    if scored.is_file() and key in ((yaml.safe_load(scored.read_text(encoding="utf-8")) or {}).get("models") or {}):
        raise BenchError(f"{scored}: a scored predictions file is registered as {key!r}, the name the tuned variant "
                         f"takes; rename that one (bench score --name) before writing the search's result")

    def edit(raw: dict) -> None:
        entry = raw["models"].get(key) or {
            "model": variant.model, "group": variant.group, "label": f"{variant.label}, tuned", "datasets": {}, "tuned": {}}
        if variant.seeds is not None:
            entry["seeds"] = list(variant.seeds)
        entry["datasets"][search.dataset] = with_values(variant.params_for(search.dataset), study.best_trial.params)
        entry["tuned"][search.dataset] = tuned_entry(search, study, results)
        raw["models"][key] = entry
        raw.setdefault("ablations", {})[f"tuning-{variant.key}"] = [variant.key, key]

    update_overlay(path, "# Written by `python -m bench tune`; `bench run` adds these variants to the suite.\n"
                         "# Each tuned variant runs only on the datasets it was tuned on.\n", edit)
    return path


def write_report(search: Search, study, results: Path) -> list[Path]:
    """trials.csv, and Optuna's optimisation-history and parameter-importance plots (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optuna = load_optuna()
    folder = search.folder(results)
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / "trials.csv"]
    atomic_write_text(out[0], study.trials_dataframe().to_csv(index=False))
    plots = [("history.png", optuna.visualization.matplotlib.plot_optimization_history)]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) >= 2 and len(study.best_trial.params) >= 2:
        plots.append(("importances.png", optuna.visualization.matplotlib.plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ax = plot(study)
        ax.figure.set_size_inches(7, 4.5)
        ax.figure.tight_layout()
        ax.figure.savefig(folder / name, dpi=120)
        plt.close(ax.figure)
        out.append(folder / name)
    return out

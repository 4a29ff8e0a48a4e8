"""`bench score`: another toolkit's predictions for a suite's split, scored by the one evaluator and
stored as a cell like any other, so tables, paired tests, breakdowns and plots include them.

The model is registered in results/scored/<suite>/overlay.yaml (which `load_suite` merges, as it
does `bench tune`'s) as a variant of `baselines.predictions:Predictions` that runs on the datasets
it has a file for; the file's SHA-256 and what the user declared about it are its parameters, so
they are in the cell's configuration and run.json.
"""
from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.suites.load import _key, load_suite, overlay_path, update_overlay
from bench.suites.schema import one_table_cell

PREDICTIONS = "baselines.predictions:Predictions"


def register_predictions(suite_name: str, dataset: str, name: str, file: Path, results: Path,
                         label: str | None = None, declared: str = "") -> Path:
    """Add (or update) variant `name` with this file for `dataset` in the suite's scored overlay."""
    from baselines.predictions import file_sha256

    base = load_suite(suite_name)  # the suite file alone: its variant names are taken
    if dataset not in [d.key for d in base.datasets]:
        raise BenchError(f"suite {base.name}: no dataset {dataset!r} (has {', '.join(d.key for d in base.datasets)})")
    name = _key(name, "--name")
    if label is not None:
        try:
            one_table_cell(label)
        except ValueError as e:
            raise BenchError(f"--label {label!r}: {e}") from None
    if any(v.key == name for v in base.variants):
        raise BenchError(f"--name {name!r}: the suite {base.name} has a model variant of that name; choose another")
    file = Path(file)
    if not file.is_file():
        raise BenchError(f"{file}: predictions file not found")
    path = overlay_path(results, base.name, "scored")
    # Everything is checked before the overlay is touched: a refused file registers nothing.
    merged = load_suite(suite_name, results)  # with every overlay: a tuned variant's name is taken too
    taken = [v for v in merged.variants if v.key == name and v.model != PREDICTIONS]
    if taken:
        raise BenchError(f"--name {name!r}: the suite {base.name} already has a variant of that name "
                         f"({taken[0].model}); choose another")
    check_predictions(file, base, dataset)

    def edit(raw: dict) -> None:
        entry = raw["models"].get(name) or {"model": PREDICTIONS, "group": "baseline", "seeds": [0], "only": [], "datasets": {}}
        if entry.get("model") != PREDICTIONS:
            raise BenchError(f"{path}: models.{name} is not a scored predictions file; choose another --name")
        entry["label"] = label or entry.get("label") or name
        before = entry["datasets"].get(dataset, {})
        entry["datasets"][dataset] = {"file": str(file.resolve()), "sha256": file_sha256(file),
                                      "declared": declared or before.get("declared", "")}  # a rescore keeps what was said
        entry["only"] = sorted({*entry["only"], dataset})
        raw["models"][name] = entry

    update_overlay(path, "# Written by `python -m bench score`: models trained elsewhere, scored from their predictions.\n", edit)
    load_suite(suite_name, results)  # the overlay as written must load
    return path


def check_predictions(file: Path, suite, dataset: str) -> None:
    """The file against the suite's split: every row readable (one line naming the first bad one),
    some item listed, and a prediction for every user the suite evaluates."""
    import numpy as np

    from baselines.predictions import parse_predictions
    from bench.execute.runner import get_split, sample_users

    split = get_split(next(d for d in suite.datasets if d.key == dataset))
    lists, _, _ = parse_predictions(file, split)
    if not any(len(items) for items, _ in lists.values()):
        raise BenchError(f"{file}: every user's item list is empty: there is nothing to score")
    users = sample_users(split.n_users, suite.user_sample)
    missing = [u for u in np.asarray(users).tolist() if u not in lists]
    if missing:
        raise BenchError(f"{file}: no prediction for user {str(split.user_ids[missing[0]])!r} ({len(missing)} of the "
                         f"{len(users)} users the suite evaluates; bench export writes them to test_users.csv)")

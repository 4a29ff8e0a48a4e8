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
from bench.suites import _key, load_suite, overlay_path, update_overlay

PREDICTIONS = "baselines.predictions:Predictions"


def register_predictions(suite_name: str, dataset: str, name: str, file: Path, results: Path,
                         label: str | None = None, declared: str = "") -> Path:
    """Add (or update) variant `name` with this file for `dataset` in the suite's scored overlay."""
    from baselines.predictions import file_sha256

    base = load_suite(suite_name)  # the suite file alone: its variant names are taken
    if dataset not in [d.key for d in base.datasets]:
        raise BenchError(f"suite {base.name}: no dataset {dataset!r} (has {', '.join(d.key for d in base.datasets)})")
    name = _key(name, "--name")
    if any(v.key == name for v in base.variants):
        raise BenchError(f"--name {name!r}: the suite {base.name} has a model variant of that name; choose another")
    file = Path(file)
    if not file.is_file():
        raise BenchError(f"{file}: predictions file not found")
    path = overlay_path(results, base.name, "scored")

    def edit(raw: dict) -> None:
        entry = raw["models"].get(name) or {"model": PREDICTIONS, "group": "baseline", "seeds": [0], "only": [], "datasets": {}}
        if entry.get("model") != PREDICTIONS:
            raise BenchError(f"{path}: models.{name} is not a scored predictions file; choose another --name")
        entry["label"] = label or entry.get("label") or name
        entry["datasets"][dataset] = {"file": str(file.resolve()), "sha256": file_sha256(file), "declared": declared}
        entry["only"] = sorted({*entry["only"], dataset})
        raw["models"][name] = entry

    update_overlay(path, "# Written by `python -m bench score`: models trained elsewhere, scored from their predictions.\n", edit)
    load_suite(suite_name, results)  # the overlay as written must load
    return path

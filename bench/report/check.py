"""Regression checks that CI runs.

1. Rerun a suite (normally `smoke`) from scratch in a temporary folder and compare every cell's
   metrics with the committed reference `results/reference/<suite>.json`, within the per-variant
   tolerances of the suite's `check.tolerance` (`default` for the rest).
2. Rebuild the tables of suites whose tables are committed and compare them byte for byte.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from bench.errors import BenchError
from bench.execute.executors import run_suite
from bench.execute.store import RunStore, atomic_write_text, dumps
from bench.suites.load import Suite, load_suite
from bench.report.tables import suite_tables


def fresh_metrics(suite: Suite) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        cells = run_suite(suite, Path(tmp), force=True)
        store = RunStore(Path(tmp))
        return {
            c.name: json.loads((store.cell_dir(suite.name, c.dataset.key, c.variant.key, c.seed) / "metrics.json").read_text())
            for c, _ in cells
        }


def compare(suite: Suite, fresh: dict, reference: dict) -> list[str]:
    tol = {"default": 1e-9, **suite.check.get("tolerance", {})}
    failures = []
    for cell in sorted(set(reference) | set(fresh)):
        if cell not in fresh:
            failures.append(f"{cell}: in the reference but not produced by the suite")
            continue
        if cell not in reference:
            failures.append(f"{cell}: produced by the suite but missing from the reference (rerun with --update)")
            continue
        t = float(tol.get(cell.split("/")[1], tol["default"]))
        for metric in sorted(set(reference[cell]) | set(fresh[cell])):
            if metric not in reference[cell]:
                failures.append(f"{cell}: {metric} is missing from the reference")
                continue
            ref, got = reference[cell][metric], fresh[cell].get(metric, math.nan)
            if not abs(got - ref) <= t:
                failures.append(f"{cell}: {metric} = {got:.6f}, reference {ref:.6f} (tolerance {t:g})")
    return failures


def check_reference(suite_name: str, results: Path, update: bool = False) -> list[str]:
    suite = load_suite(suite_name)
    ref_path = results / "reference" / f"{suite.name}.json"
    fresh = fresh_metrics(suite)
    if update:
        atomic_write_text(ref_path, dumps(fresh))
        return []
    if not ref_path.is_file():
        raise BenchError(f"{ref_path}: no reference; create it with `python -m bench check --suite {suite.name} --update`")
    try:
        reference = json.loads(ref_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BenchError(f"{ref_path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise BenchError(f"{ref_path}: line {e.lineno}: not valid JSON") from None
    check_reference_shape(reference, ref_path)
    return compare(suite, fresh, reference)


def check_reference_shape(reference, path: Path) -> None:
    """{cell: {metric: number}}: anything else is one line naming the entry (it raised TypeError)."""
    if not isinstance(reference, dict):
        raise BenchError(f"{path}: must map each cell to its metrics, not a {type(reference).__name__}")
    for cell, metrics in reference.items():
        if not isinstance(metrics, dict):
            raise BenchError(f"{path}: {cell}: must map metric names to numbers, not a {type(metrics).__name__}")
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BenchError(f"{path}: {cell}: {name}: must be a number, not {value!r}")


def check_tables(suite_name: str, results: Path) -> list[str]:
    suite = load_suite(suite_name, results)  # with the variants `bench tune` added
    folder = results / "tables" / suite.name
    if not folder.is_dir():
        return [f"{folder}: no committed tables to check (build them with `python -m bench table --suite {suite.name}`)"]
    expected = suite_tables(suite, results)
    failures = []
    for name in sorted(set(expected) | {p.name for p in folder.iterdir() if p.suffix in (".md", ".tex")}):
        path = folder / name
        if name not in expected:
            failures.append(f"{path}: committed but no longer produced from the stored runs")
        elif not path.exists():
            failures.append(f"{path}: produced from the stored runs but not committed")
        elif path.read_text(encoding="utf-8") != expected[name]:
            failures.append(f"{path}: differs from the table rebuilt from results/runs/{suite.name}")
    return failures

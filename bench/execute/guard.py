"""Before `bench run` starts a long suite: what it would compute and how long the plan says that
takes. Above `ASK_ABOVE_S` it asks (at a terminal) or stops with exit 2 and says to add `--yes`
(anywhere else: CI, a batch job), so nobody starts hundreds of CPU-hours by accident."""
from __future__ import annotations

import sys
from pathlib import Path

from bench.errors import BenchError
from bench.execute.plan import plan_suite
from bench.execute.planned import PlannedCell, duration
from bench.suites.load import Suite

ASK_ABOVE_S = 3600.0


def selected(planned: list[PlannedCell], cells, force: bool, stale: bool) -> list[PlannedCell]:
    """Of the suite's planned cells, those `bench run` would compute: the ones its filters chose
    (`cells`, as `runner.plan` selects them) that are to run, stale with --stale, or all with --force."""
    names = {c.name for c in cells}
    return [p for p in planned if p.cell.name in names
            and (force or p.state.startswith("to run") or (stale and p.state.startswith("stale")))]


def summary(todo: list[PlannedCell]) -> tuple[float, str]:
    known = [p.seconds for p in todo if p.seconds is not None]
    total = sum(known)
    by_device = {}
    for p in todo:
        by_device.setdefault(p.device, []).append(p)
    parts = [f"{len(v)} on {d}" for d, v in sorted(by_device.items())]
    text = (f"{len(todo)} cell(s) to compute ({', '.join(parts)}), about {duration(total)} by `bench plan`"
            + (f" ({len(todo) - len(known)} without an estimate)" if len(known) < len(todo) else ""))
    return total, text


def confirm_long_run(suite: Suite, root: Path, models=None, datasets=None, seeds=None, force=False, stale=False,
                     yes: bool = False, gpu: bool = False) -> dict[str, float]:
    """Print what the run computes; above the threshold ask, or stop unless `yes`. Returns each cell's
    estimate in seconds (for the progress bar)."""
    from bench.execute.runner import plan, validate_plan

    cells = plan(suite, models, datasets, seeds)
    if not cells:
        raise BenchError(f"suite {suite.name}: the filters select no cell")
    validate_plan(cells)  # a bad parameter is named with its variant before anything is estimated
    todo = selected(plan_suite(suite, root, gpu), cells, force, stale)
    total, text = summary(todo)
    estimates = {p.cell.name: p.seconds for p in todo if p.seconds is not None}
    if not todo:
        return estimates
    print(f"suite {suite.name}: {text}", flush=True)
    if total <= ASK_ABOVE_S or yes:
        return estimates
    how = f"python -m bench plan --suite {suite.name}"
    if sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"That is more than {duration(ASK_ABOVE_S)} (cells: `{how}`). Start it? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return estimates
    raise BenchError(f"suite {suite.name}: {text}, more than {duration(ASK_ABOVE_S)}; not started (see `{how}`; "
                     f"--models/--seeds run a part; --yes starts it all)")

"""`python -m bench plan --suite NAME`: every cell's state (done / to run / stale code), the device it
would use here, and an estimated time (bench/execute/estimates.py says how) from the stored runs."""
from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from bench.execute.attempt import describe, read_attempt
from bench.execute.estimates import (dataset_stats, epoch_cost_ratios, estimate, stage1_key,
                                     stage1_seconds, this_machine, training_key)
from bench.execute.executors import wants_gpu
from bench.models import make_model
from bench.execute.fingerprint import checkpoint_key, staleness
from bench.execute.records import family, frozen_cache_seconds, record_device, stored_records
from bench.report.costs import device as machine
from bench.execute.planned import PlannedCell, duration
from bench.execute.provenance import total_memory_mb
from bench.execute.runner import data_version, plan
from bench.execute.sitting import sitting_markdown
from bench.execute.store import RunStore, config_hash
from bench.suites.load import Suite


def cell_device(model: str, params: dict) -> str:
    """Where the model would run here: the device it resolves (`device: auto` takes a GPU where there
    is one); models without one run on the CPU."""
    return "gpu" if str(getattr(make_model(model, params), "device", "cpu")).startswith("cuda") else "cpu"


def plan_suite(suite: Suite, root: Path, gpu: bool = False, history: dict | None = None) -> list[PlannedCell]:
    """With `gpu`, as if on a machine with a GPU: models that would take one (`device: auto` or
    cuda) are estimated from the stored GPU runs. `history`: `stored_records(root)`, if read already."""
    history = stored_records(root) if history is None else history
    store, out, trained, stage1_trained = RunStore(root), [], set(), set()
    trains, trains_stage1 = {}, {}  # training / stage-I key -> the first to-run cell that trains it
    here, versions = this_machine(), {}
    for cell in plan(suite):
        folder = store.cell_dir(suite.name, cell.dataset.key, cell.variant.key, cell.seed)
        chash = config_hash(cell.config())
        if cell.dataset.key not in versions:
            versions[cell.dataset.key] = data_version(cell.dataset)
        why = store.check_cell(folder, chash, versions[cell.dataset.key])
        stale = staleness(store.record(folder)) if why is None else None
        trained_s = 0.0  # training a checkpoint already holds
        if why is not None:
            state = f"to run: {why}"
        elif stale is None:
            state = "done"
        elif stale.startswith("no code"):
            state = "done (no code fingerprint)"
        else:
            state = f"stale (--stale reruns): {stale}"
        if why is not None or (stale and not stale.startswith("no code")):  # what a run would (re)compute
            if store.is_locked(folder):
                state += "; running now (another process holds its lock)"
            elif (left := read_attempt(folder)) is not None:
                state += f"; {describe(left)}"
            progress = store.progress(store.cache_dir(suite.name, cell.dataset.key, cell.variant.key, cell.seed))
            if progress and progress.get("key") == checkpoint_key(chash, cell.variant.model, cell.dataset.spec):
                trained_s = float(progress.get("seconds") or 0.0)
                state += f"; resumes from its checkpoint ({progress['done']}, {duration(trained_s)} trained)"
        params = cell.variant.params_for(cell.dataset.key)
        device = "gpu" if gpu and wants_gpu(cell) else cell_device(cell.variant.model, params)
        kind = family(cell.variant.model, params)
        others = [r for (k, spec), recs in history.items() if k == kind and spec != cell.dataset.spec for r in recs]
        mine = history.get((kind, cell.dataset.spec), [])
        ratios = {} if mine else epoch_cost_ratios(history, kind, device, cell.dataset.spec)
        train, predict, basis = estimate(cell, device, mine, others, dataset_stats(history, cell.dataset.spec), ratios, here)
        key, s1 = training_key(cell), stage1_key(cell)
        after = trains.get(key) if key in trained else trains_stage1.get(s1) if s1 in stage1_trained else None
        if key in trained and train is not None:
            train, basis = 0.0, basis + "; trained weights shared with an earlier row"
        elif trained_s and train is not None:
            train, basis = max(train - trained_s, 0.0), basis + "; less what its checkpoint holds"
        elif s1 is not None and s1 in stage1_trained and train:  # an earlier row trains it
            shared = stage1_seconds(params, [r for r in mine if record_device(r) == device])
            if shared:
                train, basis = max(train - shared, 0.0), basis + f"; stage I ({duration(shared)}) shared with an earlier row"
        if not state.startswith("done"):  # this cell will train what no earlier cell does
            if key not in trained:
                trains[key] = cell.name
            if s1 is not None and s1 not in stage1_trained:
                trains_stage1[s1] = cell.name
        trained.add(key)
        if s1 is not None:
            stage1_trained.add(s1)
        peak = max((int((r.get("memory") or {}).get("host_peak_mb") or 0) for r in mine
                    if r["config"]["model"]["params"] == params), default=0)
        out.append(PlannedCell(cell, state, device, train, predict, basis, after, peak))
    return out


def plan_markdown(suite: Suite, root: Path, gpu: bool = False, hours: float | None = None, run: str = "") -> str:
    """The plan; with `hours`, also what fits in them as commands starting with `run` (bench/execute/sitting.py)."""
    history = stored_records(root)
    cells = plan_suite(suite, root, gpu, history)
    rows = [[p.cell.name, p.state, p.device, duration(p.seconds), p.basis] for p in cells]
    body = tabulate(rows, headers=["Cell", "State", "Device", "Estimate", "Basis"], tablefmt="pipe", disable_numparse=True)
    totals = []
    for what, prefix in (("to run", "to run"), ("stale, rerun with --stale", "stale")):
        todo = [p for p in cells if p.state.startswith(prefix)]
        for device in sorted({p.device for p in todo}):
            mine = [p for p in todo if p.device == device]
            known = [p.seconds for p in mine if p.seconds is not None]
            totals.append(f"{what} on {device}: {len(mine)} cells, {duration(sum(known))} estimated for {len(known)} of them"
                          + (f", {len(mine) - len(known)} without an estimate" if len(known) < len(mine) else ""))
    done = sum(p.state.startswith("done") for p in cells)
    where = " as if on a GPU machine like the stored GPU runs'" if gpu else ""
    return (f"### plan: {suite.name} ({done} of {len(cells)} cells done){where}\n\n{body}\n\n"
            + "\n".join(f"- {t}" for t in totals or ["nothing to run"]) + "\n"
            "- Estimates: stored runs of the same model on the same dataset and device; with the same settings their own "
            "fit times (early stopping, validation and stages loaded from a cache included), else scaled by the planned epochs or steps (an upper bound where early "
            "stopping ends training sooner; CALRec by tokens where a run of the same training settings says how many a "
            "step takes) and by the number of test users; runs on this machine are preferred where there are any, and "
            "the same settings on another machine, scaled by what a training both ran took on each, over other settings "
            "on this one. A model never run on "
            "a dataset is scaled from its runs on others (an epoch by what other models' epochs cost more there, else by "
            "interactions; scoring by items), a rough guess.\n" + cache_note(cells, root, history)
            + memory_note(cells)
            + ("" if hours is None else "\n" + sitting_markdown(run, cells, hours)))


def cache_note(cells: list[PlannedCell], root: Path, history: dict) -> str:
    """CALRec's frozen-layer cache is counted as built: say what a build costs, for a machine without it."""
    if not any(p.state.startswith("to run") and p.cell.variant.model == "calrec"
               and p.cell.variant.params_for(p.cell.dataset.key).get("frozen_cache") for p in cells):
        return ""
    from bench.precision import native_bf16  # imports torch: only where CALRec cells are planned

    here = this_machine()
    builds = [(s, machine(r) == here) for recs in history.values() for r in recs
              if (s := frozen_cache_seconds(r)) > 60]  # a load takes ~1 s
    local = [s for s, mine in builds if mine]
    shown = local or [s for s, _ in builds]
    if not shown:
        return ""
    return (f"- CALRec's frozen-layer cache ({root}/cache/shared) is counted as built; where it is gone, or was built at "
            f"another precision (bf16 is in its key; here `bf16: auto` is {'bf16' if native_bf16() else 'fp32'}), the first "
            f"cell of each dataset and setting builds it again: up to {duration(max(shown))} "
            f"({'on this machine' if local else 'on other machines'}, as stored runs record).\n")


def memory_note(cells: list[PlannedCell], share: float = 0.9) -> str:
    """Cells to run whose settings a stored run trained at a peak resident memory above `share` of this
    machine's: a cell past the machine's memory is killed without a word, hours in."""
    total = total_memory_mb()
    if not total:
        return ""
    heavy = [f"{p.cell.name} ({p.peak_mb / 1024:.1f} GB)" for p in cells
             if p.state.startswith("to run") and p.peak_mb > share * total]
    if not heavy:
        return ""
    return (f"- Memory: stored runs of the same settings peaked near or above this machine's {total / 1024:.1f} GB, so "
            f"these cells may be killed for memory here (fewer rows a forward pass, `micro_batch`, lowers a CALRec "
            f"cell's peak): {', '.join(heavy)}.\n")

"""`python -m bench plan --suite NAME`: every cell's state (done / to run / stale code), the device it
would use here, and an estimated time from the stored runs of the same model on the same dataset.

Estimates scale a stored run by the planned training budget (epochs, or CALRec's stage steps) and by
the number of test users; they are upper bounds where early stopping may end training sooner. Rows
that reuse another cell's trained weights (CALRec's inference variants) count their training once.
A cell with no stored run of its model on its dataset and device has no estimate, and says so.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.models import make_model
from bench.fingerprint import checkpoint_key, staleness
from bench.results import epoch_budget
from bench.runner import Cell, plan
from bench.store import RunStore, config_hash
from bench.suites import Suite


@dataclass
class PlannedCell:
    cell: Cell
    state: str  # "done", "done (no code fingerprint)", "to run: <why>" or "stale (--stale reruns): <why>"
    device: str
    train_s: float | None
    predict_s: float | None
    basis: str


def budget(model: str, params: dict) -> float | None:
    """Training units the config asks for: epochs, or CALRec's stage steps (None: not a trained model)."""
    if model == "calrec":
        from calrec.config import CALRecConfig, stage1_settings

        t = CALRecConfig.from_params(params).training
        return float((stage1_settings(t.stage1)["steps"] if t.stage1 else 0) + t.stage2_steps)
    epochs = epoch_budget(model, params)
    return None if epochs is None else float(epochs)


def units_run(rec: dict) -> float | None:
    """Training units a stored run actually ran: epochs, or CALRec's stage steps."""
    info = rec.get("model_info") or {}
    if info.get("epochs_run"):
        return float(info["epochs_run"])
    steps = sum(t.get("steps", 0) for t in (info.get("timings") or {}).values() if isinstance(t, dict))
    return float(steps) or None


def cell_device(model: str, params: dict) -> str:
    """Where the model would run here: the device it resolves (`device: auto` takes a GPU where there
    is one); models without one run on the CPU."""
    return "gpu" if str(getattr(make_model(model, params), "device", "cpu")).startswith("cuda") else "cpu"


def record_device(rec: dict) -> str:
    return "gpu" if (rec.get("machine") or {}).get("accelerator") else "cpu"


def train_seconds(rec: dict) -> float:
    """Training wall time of a record; for CALRec the stages' own times (a cached stage costs its original)."""
    stages = ((rec.get("model_info") or {}).get("timings") or {})
    if rec["config"]["model"]["name"] == "calrec" and stages:
        return float(sum(t.get("train_seconds", 0.0) for t in stages.values() if isinstance(t, dict)))
    return float(rec["fit_seconds"])


def stored_records(root: Path) -> dict[tuple[str, str], list[dict]]:
    """(model, dataset spec) -> every stored run.json under root/runs, any suite."""
    out = defaultdict(list)
    for cell in RunStore(root).cells():
        rec = RunStore.record(cell)
        try:
            out[(rec["config"]["model"]["name"], rec["config"]["dataset"]["spec"])].append(rec)
        except (TypeError, KeyError):  # unreadable (None) or incomplete
            continue
    return out


def n_test_users(cell: Cell, recs: list[dict]) -> int | None:
    users = recs[0]["dataset_stats"]["users"] if recs else None
    sample = cell.suite.user_sample
    if sample is not None and users is not None:
        return min(sample["size"], users)
    return users


def estimate(cell: Cell, device: str, recs: list[dict]) -> tuple[float | None, float | None, str]:
    model, params = cell.variant.model, cell.variant.params_for(cell.dataset.key)
    if not recs:
        return None, None, "no stored run of this model on this dataset"
    same = [r for r in recs if record_device(r) == device]
    if not same:
        return None, None, f"stored runs only on {record_device(recs[0])}"
    exact = [r for r in same if r["config"]["model"]["params"] == params]
    same = exact or same  # the same settings where stored (CALRec's inference variants differ widely)
    want = budget(model, params)
    per_unit = [train_seconds(r) / units_run(r) for r in same if units_run(r)]
    if want is not None and per_unit:
        train = float(np.median(per_unit)) * want
    else:
        train = float(np.median([train_seconds(r) for r in same])) if want != 0 else 0.0
    users = n_test_users(cell, same)
    per_user = np.median([r["predict_seconds"] / max(r["evaluated_users"], 1) for r in same])
    predict = float(per_user * users) if users else None
    what = "same settings" if exact else "other settings"
    return train, predict, f"{len(same)} stored run{'s' if len(same) > 1 else ''} ({device}, {what})"


def training_key(cell: Cell) -> tuple:
    """Cells with the same key share one trained model (CALRec: everything but inference settings)."""
    params = dict(cell.variant.params_for(cell.dataset.key))
    if cell.variant.model == "calrec":
        from calrec.config import InferenceConfig

        for f in fields(InferenceConfig):
            params.pop(f.name, None)
        return (cell.dataset.key, cell.seed, "calrec", json.dumps(params, sort_keys=True, default=str))
    return (cell.dataset.key, cell.seed, cell.variant.key)


def plan_suite(suite: Suite, root: Path) -> list[PlannedCell]:
    store, history, out, trained = RunStore(root), stored_records(root), [], set()
    for cell in plan(suite):
        folder = store.cell_dir(suite.name, cell.dataset.key, cell.variant.key, cell.seed)
        chash = config_hash(cell.config())
        why = store.check_cell(folder, chash)
        stale = staleness(store.record(folder)) if why is None else None
        if why is not None:
            state = f"to run: {why}"
            progress = store.progress(store.cache_dir(suite.name, cell.dataset.key, cell.variant.key, cell.seed))
            if progress and progress.get("key") == checkpoint_key(chash, cell.variant.model, cell.dataset.spec):
                state += f"; resumes from its checkpoint ({progress['done']}, {_fmt(progress.get('seconds'))} trained)"
        elif stale is None:
            state = "done"
        elif stale.startswith("no code"):
            state = "done (no code fingerprint)"
        else:
            state = f"stale (--stale reruns): {stale}"
        params = cell.variant.params_for(cell.dataset.key)
        device = cell_device(cell.variant.model, params)
        train, predict, basis = estimate(cell, device, history.get((cell.variant.model, cell.dataset.spec), []))
        key = training_key(cell)
        if key in trained and train is not None:
            train, basis = 0.0, basis + "; trained weights shared with an earlier row"
        trained.add(key)
        out.append(PlannedCell(cell, state, device, train, predict, basis))
    return out


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "no estimate"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def plan_markdown(suite: Suite, root: Path) -> str:
    cells = plan_suite(suite, root)
    rows = [[p.cell.name, p.state, p.device, _fmt(None if p.train_s is None or p.predict_s is None else p.train_s + p.predict_s),
             p.basis] for p in cells]
    body = tabulate(rows, headers=["Cell", "State", "Device", "Estimate", "Basis"], tablefmt="pipe", disable_numparse=True)
    totals = []
    for what, prefix in (("to run", "to run"), ("stale, rerun with --stale", "stale")):
        todo = [p for p in cells if p.state.startswith(prefix)]
        for device in sorted({p.device for p in todo}):
            mine = [p for p in todo if p.device == device]
            known = [p.train_s + p.predict_s for p in mine if p.train_s is not None and p.predict_s is not None]
            totals.append(f"{what} on {device}: {len(mine)} cells, {_fmt(sum(known))} estimated for {len(known)} of them"
                          + (f", {len(mine) - len(known)} without an estimate" if len(known) < len(mine) else ""))
    done = sum(p.state.startswith("done") for p in cells)
    return (f"### plan: {suite.name} ({done} of {len(cells)} cells done)\n\n{body}\n\n"
            + "\n".join(f"- {t}" for t in totals or ["nothing to run"]) + "\n"
            "- Estimates: stored runs of the same model on the same dataset and device, scaled by the planned "
            "epochs or steps (an upper bound where early stopping ends training sooner) and by the number of test "
            "users; their machines may differ from this one.\n")

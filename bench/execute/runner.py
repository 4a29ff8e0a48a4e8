"""Runs a suite's cells: fit on train, score test users through the one evaluator, store the run."""
from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bench.datasets import load_dataset
from bench.execute.attempt import describe, read_attempt, recorded_attempt
from bench.execute.distributed import agree, check_models, is_main, world
from bench.errors import BenchError
from bench.evaluate import metric_names, metrics_from_ranks
from bench.models import FitContext, make_model
from bench.execute.fingerprint import ROOT, checkpoint_key, code_record, staleness
from bench.execute.provenance import machine, peak_memory, reset_peak_memory, versions
from bench.execute.scoring import cold_test_targets, masked_test_targets, score_users
from bench.execute.scratch import scratch_cwd
from bench.execute.space import check_space
from bench.split import Split, leave_one_out
from bench.execute.store import RunStore, config_hash, dumps, per_user_csv
from bench.suites.load import DatasetEntry, Suite, Variant

PROTOCOL = {
    "split": "leave-one-out by time (stable sort; file order breaks timestamp ties); users with < 3 events dropped",
    "ranking": "full ranking over all items",
    "ties": "exact expected value over random tie orders (McSherry & Najork 2008)",
    "unranked": "items outside a ranked list tie after it",
}


@dataclass(frozen=True)
class Cell:
    suite: Suite
    dataset: DatasetEntry
    variant: Variant
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset.key}/{self.variant.key}/seed{self.seed}"

    def config(self) -> dict:
        s = self.suite
        return {
            "suite": s.name,
            "dataset": {"key": self.dataset.key, "spec": self.dataset.spec, "params": self.dataset.params},
            "model": {"variant": self.variant.key, "name": self.variant.model, "params": self.variant.params_for(self.dataset.key)},
            "seed": self.seed,
            "ks": s.ks,
            "history_masking": s.history_masking,
            "user_sample": s.user_sample,
            "valid_sample": s.valid_sample,
            "protocol": PROTOCOL,
        }


@lru_cache(maxsize=4)
def _split(spec: str, params_key: tuple) -> Split:
    return leave_one_out(load_dataset(spec, **dict(params_key)))


def get_split(entry: DatasetEntry) -> Split:
    return _split(entry.spec, tuple(sorted(entry.params.items())))


def data_version(entry: DatasetEntry) -> str | None:
    """The dataset's version as its files give it now (with their content hash), against which a
    stored cell is checked; None where the files cannot be read here (e.g. tables of the `paper`
    suite on a machine without the Amazon files)."""
    try:
        return get_split(entry).version
    except BenchError:
        return None


def sample_users(n_users: int, sample: dict | None) -> np.ndarray:
    if sample is None or sample["size"] >= n_users:
        return np.arange(n_users)
    rng = np.random.default_rng(sample["seed"])
    return np.sort(rng.choice(n_users, size=sample["size"], replace=False))


def plan(suite: Suite, models=None, datasets=None, seeds=None) -> list[Cell]:
    """The cells a run covers. A filter that is given must name something (an empty `--models ""`
    is refused rather than read as 'everything')."""
    for name, wanted in (("--models", models), ("--datasets", datasets), ("--seeds", seeds)):
        if wanted is not None and not len(wanted):
            raise BenchError(f"{name} is empty: name at least one, or leave the option out for all")
    for name, wanted, known in (("model variant", models, [v.key for v in suite.variants]),
                                ("dataset", datasets, [d.key for d in suite.datasets])):
        for w in wanted or []:
            if w not in known:
                raise BenchError(f"suite {suite.name}: no {name} {w!r} (has {', '.join(known)})")
    cells = []
    for d in suite.datasets:
        if datasets and d.key not in datasets:
            continue
        for v in suite.variants:
            if (models and v.key not in models) or not v.runs_on(d.key):
                continue
            for seed in (v.seeds or suite.seeds):
                if seeds and seed not in seeds:
                    continue
                cells.append(Cell(suite, d, v, seed))
    return cells


def git_commit(root: Path | None = None) -> str:
    """HEAD (+ "-dirty" for uncommitted tracked changes). BENCH_COMMIT overrides it for a tree
    copied elsewhere (e.g. onto a GPU machine), whose .git may be missing or stale."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    root = root or ROOT
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        # results/ is data, not code: committed cells and tables do not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def run_cell(cell: Cell, store: RunStore, force: bool = False, stale: bool = False) -> str:
    """Compute the cell unless it is stored and current. Under a multi-process launch rank 0
    decides (and alone holds the lock and writes); the other ranks follow it into the fit."""
    config = cell.config()
    chash = config_hash(config)
    out = store.cell_dir(cell.suite.name, cell.dataset.key, cell.variant.key, cell.seed)
    if not is_main():
        status = agree(None)
        return _compute_cell(cell, store, out, config, chash, write=False) if status == "compute" else status
    lock = store.lock(out)
    if lock is None:
        return agree("skipped: another run is computing this cell now")
    try:
        for action in store.repair(out):
            tqdm.write(f"{cell.name}: {action} (left by an interrupted write)")
        why = store.check_cell(out, chash, get_split(cell.dataset).version)
        if why is None and stale:
            why = staleness(store.record(out))
        if not force and why is None:
            return agree("cached")
        if why not in (None, "not run yet"):
            tqdm.write(f"{cell.name}: recomputing: {why}")
        if (left := read_attempt(out)) is not None:  # the lock is ours: whoever left it is gone
            tqdm.write(f"{cell.name}: {describe(left)}; computing it again")
        agree("compute")
        with recorded_attempt(out):
            return _compute_cell(cell, store, out, config, chash)
    finally:
        lock.close()


def _compute_cell(cell: Cell, store: RunStore, out: Path, config: dict, chash: str, write: bool = True) -> str:
    # Read before the model's modules are imported and trained: the record names the code that ran,
    # not files edited while a long cell computed.
    code, commit = code_record(cell.variant.model, cell.dataset.spec), git_commit()
    split = get_split(cell.dataset)
    users = sample_users(split.n_users, cell.suite.user_sample)
    ctx = FitContext(
        seed=cell.seed,
        workdir=store.cache_dir(cell.suite.name, cell.dataset.key, cell.variant.key, cell.seed).absolute(),
        valid_users=sample_users(split.n_users, cell.suite.valid_sample),
        ks=cell.suite.ks,
        # shared_cache: e.g. CALRec's stage weights, reused across cells only under the same code
        # fingerprint; checkpoint_key: under which a model may save its training state in workdir and
        # resume from it (same config, same code)
        extra={"shared_cache": (store.root / "cache" / "shared").absolute(), "code_fingerprint": code["fingerprint"],
               "checkpoint_key": checkpoint_key(chash, cell.variant.model, cell.dataset.spec),
               "history_masking": cell.suite.history_masking},  # a model that ranks lists leaves history out only then
    )
    masked = masked_test_targets(split, users)
    if cell.suite.history_masking and masked == len(users):
        raise BenchError(f"dataset {cell.dataset.key!r}: every evaluated user's test item is in their own history, "
                         f"which history masking removes, so no target can be ranked (set history_masking: false)")
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    model = make_model(cell.variant.model, config["model"]["params"])
    seed_everything(cell.seed)
    reset_peak_memory()
    t0 = time.perf_counter()
    with scratch_cwd(cell.name):
        model.fit(split, ctx)
        t1 = time.perf_counter()
        ranks = score_users(model, split, users, "test", cell.suite.history_masking, cell.suite.eval_batch, cell.name)
        t2 = time.perf_counter()
    per_user = metrics_from_ranks(ranks, cell.suite.ks)
    metrics = {m: float(per_user[m].mean()) for m in metric_names(cell.suite.ks)}
    summary = f"R@10={metrics.get('Recall@10', float('nan')):.4f} N@10={metrics.get('NDCG@10', float('nan')):.4f} fit {t1 - t0:.1f}s"
    if not write:
        return summary
    info = getattr(model, "info", lambda: {})()
    record = {
        "config": config,
        "config_hash": chash,
        "commit": commit,
        "code": code,
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], "-m", "bench", *sys.argv[1:]]),
        "versions": versions(),
        "machine": machine(),
        "memory": peak_memory(),  # this process's (rank 0's under torchrun), fit and scoring
        "ranks": world()[1],  # processes of a data-parallel launch (torchrun), 1 otherwise
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (t2 - t0))),
        # a model resumed from its checkpoint reports the training time of the processes before
        "fit_seconds": round(t1 - t0 + float(info.get("fit_seconds_before_resume") or 0.0), 3),
        "predict_seconds": round(t2 - t1, 3),
        "evaluated_users": int(len(users)),
        "cold_test_targets_evaluated": cold_test_targets(split, users),
        "masked_test_targets_evaluated": masked if cell.suite.history_masking else 0,
        "dataset_stats": split.stats(),
        "model_info": info,
    }
    if cell.variant.tuned is not None:
        record["tuning"] = cell.variant.tuned[cell.dataset.key]  # the study and trial these parameters came from
    files = {
        "run.json": dumps(record),
        "metrics.json": dumps(metrics),
        "per_user.csv.gz": per_user_csv(split.user_ids[users], split.item_ids[split.test[users]], ranks),
    }
    if ctx.curves:
        import pandas as pd

        files["curves.csv"] = pd.DataFrame(ctx.curves).to_csv(index=False)
    store.write_cell(out, files)
    return summary


def validate_plan(cells: list[Cell]) -> None:
    """Every model's parameters and every dataset name, checked before the first cell runs: a typo
    in the last model of a long suite surfaces now, not hours later."""
    from bench.datasets import entry_spec, missing_inputs, resolve

    seen, inputs, models = set(), {}, {}
    for cell in cells:
        try:
            resolve(cell.dataset.spec, cell.dataset.params)
        except BenchError as e:
            raise BenchError(f"suite {cell.suite.name}: dataset {cell.dataset.key!r}: {e}") from None
        inputs[cell.dataset.spec] = cell.dataset.params
        key = (cell.variant.key, cell.dataset.key)
        if key not in seen:
            seen.add(key)
            params = cell.variant.params_for(cell.dataset.key)
            try:
                models[cell.variant.key] = make_model(cell.variant.model, params)
            except (BenchError, TypeError, ValueError) as e:
                raise BenchError(f"suite {cell.suite.name}: model variant {cell.variant.key!r}: {e}") from None
            if cell.variant.tune:  # a space `bench tune` would search: its values must build the model too
                check_space(cell.variant.model, params, cell.variant.tune, f"suite {cell.suite.name}: models.{cell.variant.key}")
            for entry in (params.get("stage1") or {}).get("datasets", []):  # CALRec's stage-I domains
                spec, extra = entry_spec(entry)
                inputs[spec] = extra
    check_models(models)  # under torchrun: data-parallel models only
    missing, sources = missing_inputs(inputs)
    if missing:
        raise BenchError(f"suite {cells[0].suite.name}: {len(missing)} input files missing: {', '.join(missing)} "
                         f"(get them from {'; '.join(sources)})")

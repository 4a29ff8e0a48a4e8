"""`python -m bench tune`: search a variant's hyperparameters on validation data only (Optuna).

The suite declares the space beside the variant (`bench.suites.schema.TuneRange`):

    sasrec: {model: sasrec, params: {...}, tune: {lr: {low: 1.0e-4, high: 1.0e-2, log: true},
                                                   dropout: {low: 0.1, high: 0.7}, hidden: {choices: [32, 64]}}}

Each trial fits the variant with the sampled values (over its own parameters for that dataset) on
the train part, with the suite's first seed, and scores the suite's validation users with the one
evaluator; the objective is a validation metric (NDCG@10 by default). TPE (seeded) proposes; a
median pruner stops a trial whose learning curve (the validation score a model logs each epoch)
trails the median of earlier trials at that epoch.

No test target is ever read: every trial gets a copy of the split whose test targets are replaced
by the validation ones (`without_test`), so no code path, ours or RecBole's, can see a held-out item.

The study lives in a database (SQLite under results/tune/<suite>/, or any URL Optuna accepts, e.g.
PostgreSQL for several workers), so a killed search resumes and several processes can share one.
The best trial becomes the variant `<variant>-tuned` in results/tune/<suite>/overlay.yaml (with a
table comparing it with the hand-set variant), which `load_suite(..., results)` merges: `bench run`
then trains and tests it like any other cell, and its run.json records the study and trial.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.errors import BenchError, optional
from bench.evaluate import metric_names, metrics_from_ranks
from bench.models import FitContext, make_model
from bench.execute.runner import get_split, sample_users, seed_everything
from bench.execute.scratch import scratch_cwd
from bench.execute.scoring import score_users
from bench.execute.space import check_space, suggest, with_values  # noqa: F401 (check_space: callers' path)
from bench.split import Split
from bench.suites.load import Suite

# Curve columns a model logs per evaluation (ours, RecBole's own); pruning reads the first present.
CURVE_KEYS = ("valid_NDCG@10", "recbole_valid_NDCG@10_unmasked")
PRUNE_STARTUP_TRIALS = 5  # no pruning until this many trials have finished: the median needs company
PRUNE_WARMUP_EPOCHS = 3  # early epochs rank runs poorly (slow starters catch up)


def load_optuna():
    """Optuna (an extra: `bench tune` refuses in one line naming it where it is not installed)."""
    return optional("optuna", "bench tune", "tune")


def without_test(split: Split) -> Split:
    """The split a search may see: test targets replaced by the validation ones."""
    return dataclasses.replace(split, test=split.valid.copy())


class PruningCurve(list):
    """A model's `ctx.curves` that reports each validation point to the trial as it is logged."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def append(self, row: dict) -> None:
        super().append(row)
        value = next((row[k] for k in CURVE_KEYS if k in row), None)
        if value is None:
            return
        step = int(row.get("epoch", len(self)))
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise load_optuna().TrialPruned(f"validation {value:.4f} at epoch {step} trails the median")


@dataclasses.dataclass
class Search:
    suite: Suite
    variant: str
    dataset: str
    metric: str = "NDCG@10"
    storage: str | None = None  # Optuna URL; default SQLite under results/tune/<suite>/

    @property
    def study_name(self) -> str:
        return f"{self.dataset}/{self.variant}"

    def folder(self, results: Path) -> Path:
        return Path(results) / "tune" / self.suite.name / self.dataset / self.variant

    @property
    def seed(self) -> int:
        """The seed every trial fits with (and the sampler starts from): the variant's first."""
        return (self.suite.variant(self.variant).seeds or self.suite.seeds)[0]

    def db_path(self, results: Path) -> Path:
        """The default study database, beside the suite's overlay."""
        return Path(results).resolve() / "tune" / self.suite.name / "optuna.db"

    def storage_url(self, results: Path) -> str:
        if self.storage:
            return self.storage
        db = self.db_path(results)
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"


def _entry(search: Search):
    suite = search.suite
    variant = suite.variant(search.variant)
    entry = next((d for d in suite.datasets if d.key == search.dataset), None)
    if entry is None:
        raise BenchError(f"suite {suite.name}: no dataset {search.dataset!r} (has {', '.join(d.key for d in suite.datasets)})")
    if not variant.tune:
        raise BenchError(f"suite {suite.name}: model variant {variant.key!r} declares no `tune:` space")
    if search.metric not in metric_names(suite.ks):
        raise BenchError(f"metric {search.metric!r} is not one the suite computes ({', '.join(metric_names(suite.ks))})")
    return variant, entry


class Failures:
    """Stops a study after `limit` trials in a row failed (a failed trial counts toward no limit of
    Optuna's, so a space whose every value fails would run for ever), keeping the first error."""

    def __init__(self, limit: int = 3):
        self.limit, self.in_a_row, self.first, self.stopped = limit, 0, None, False

    def note(self, number: int, message: str) -> None:
        self.first = self.first or f"trial {number}: {message}"

    def __call__(self, study, trial) -> None:
        self.in_a_row = self.in_a_row + 1 if trial.state.name == "FAIL" else 0
        if self.in_a_row >= self.limit:
            self.stopped = True
            study.stop()


def objective_fn(search: Search, split: Split, valid_users: np.ndarray, failures: Failures):
    """What one trial does: fit with the sampled values, score validation users, return the metric."""
    suite = search.suite
    variant = suite.variant(search.variant)
    base = variant.params_for(search.dataset)
    seed = search.seed
    optuna = load_optuna()

    def objective(trial) -> float:
        try:
            return run_trial(trial)
        except BenchError as e:  # the trial fails (a NaN value: Optuna says so in one line, no traceback)
            failures.note(trial.number, str(e))
            trial.set_user_attr("error", str(e)[:500])
            return float("nan")

    def run_trial(trial) -> float:
        params = with_values(base, suggest(trial, variant.tune))
        model = make_model(variant.model, params)
        work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
        try:
            ctx = FitContext(seed=seed, workdir=work, valid_users=valid_users, ks=suite.ks, curves=PruningCurve(trial),
                             extra={"history_masking": suite.history_masking})
            seed_everything(seed)
            t0 = time.perf_counter()
            with scratch_cwd(f"trial {trial.number}"):
                try:
                    model.fit(split, ctx)
                finally:
                    trial.set_user_attr("fit_seconds", round(time.perf_counter() - t0, 2))
                    trial.set_user_attr("epochs_run", getattr(model, "epochs_run", None))
                ranks = score_users(model, split, valid_users, "valid", suite.history_masking, suite.eval_batch, "validation")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        means = {m: float(v.mean()) for m, v in metrics_from_ranks(ranks, suite.ks).items()}
        for name, value in means.items():
            trial.set_user_attr(f"valid_{name}", value)
        if not np.isfinite(means[search.metric]):
            raise optuna.TrialPruned("non-finite validation metric")
        return means[search.metric]

    return objective


def run_search(search: Search, results: Path, trials: int, timeout: float | None = None, callbacks=()):
    """Run trials until the study holds `trials` finished (complete or pruned) ones or `timeout`
    seconds pass; a resumed search continues the same study. Returns the study."""
    optuna = load_optuna()
    variant, entry = _entry(search)
    check_space(variant.model, variant.params_for(entry.key), variant.tune, f"suite {search.suite.name}: models.{variant.key}")
    study = open_study(search, results)
    # Seeded, so a fresh search is reproducible; offset by the trials already stored, else a resumed
    # search would draw its random start-up trials again (and a worker joining a running one too).
    held = study.get_trials(deepcopy=False)
    offset = len(held) + (os.getpid() if any(t.state == optuna.trial.TrialState.RUNNING for t in held) else 0)
    with warnings.catch_warnings():  # constant_liar (parallel workers avoid each other's running trials) is "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(seed=(search.seed + offset) % 2**32, constant_liar=True)
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    left = trials - len(study.get_trials(deepcopy=False, states=done_states))
    if left > 0:
        split = without_test(get_split(entry))
        valid_users = sample_users(split.n_users, search.suite.valid_sample)
        failures = Failures()
        with quiet_tracebacks():
            study.optimize(objective_fn(search, split, valid_users, failures), timeout=timeout, gc_after_trial=True,
                           callbacks=[optuna.study.MaxTrialsCallback(trials, states=done_states), failures, *callbacks])
        if failures.stopped:
            raise BenchError(f"tune {search.study_name}: {failures.limit} trials in a row failed, so the search stopped; "
                             f"the first: {failures.first}")
    return study


def open_study(search: Search, results: Path):
    """The study in its database, created where missing; a database that cannot be opened (a bad
    URL, a missing folder or driver, a damaged file) is one line saying how to start afresh."""
    optuna = load_optuna()
    url = search.storage_url(results)
    shown = url if search.storage else str(search.db_path(results))
    try:
        with warnings.catch_warnings():  # heartbeats (a killed worker's trial is failed, not left running) are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
        return optuna.create_study(
            storage=storage, study_name=search.study_name, direction="maximize", load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_EPOCHS))
    except ModuleNotFoundError as e:
        raise BenchError(f"--storage {shown}: its database driver is not installed (pip install {e.name})") from None
    except Exception as e:  # noqa: BLE001 -- SQLAlchemy's and Optuna's errors for a URL or file they cannot use
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        fresh = (f"; move {shown} away to start a fresh study" if not search.storage else "")
        raise BenchError(f"study database {shown} cannot be opened: {first}{fresh}") from None


class _DropTracebacks:
    """A logging filter: Optuna logs an interrupted trial with its whole traceback before the
    interrupt reaches our one-line message."""

    def filter(self, record) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


class quiet_tracebacks:
    """On Optuna's handlers (its trial messages come from child loggers, which a logger's own
    filter would not see)."""

    def __enter__(self):
        import logging

        self.handlers, self.f = logging.getLogger("optuna").handlers, _DropTracebacks()
        for h in self.handlers:
            h.addFilter(self.f)

    def __exit__(self, *exc):
        for h in self.handlers:
            h.removeFilter(self.f)
        return False

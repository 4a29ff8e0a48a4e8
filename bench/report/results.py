"""Loads stored runs of a suite back into per-user metric frames, for tables, plots and checks."""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.evaluate import Ranks, metrics_from_ranks
from bench.models import model_class
from bench.execute.runner import data_version, plan
from bench.execute.store import OTHER_DATA, RunStore, config_hash
from bench.suites.load import Suite


# Models whose scores do not depend on the seed: one seed is all of them, so they are compared with
# the reference's per-user values averaged over all its seeds (by registry name).
DETERMINISTIC = frozenset({"pop", "itemknn", "bm25-text"})

# What the reports beside the tables show of every cell (suites must have k = 10: bench/suites/schema.py).
REPORTED = ("NDCG@10", "Recall@10")


def seed_independent(model: str, params: dict) -> bool:
    """Whether a row's scores ignore the seed: a DETERMINISTIC model, or CALRec left untrained (no
    stage I, no stage II steps) on pretrained weights and ranking the whole catalog by likelihood
    (no sampling anywhere; the random `tiny` backbone's weights come from the seed). `params`: the
    model's parameters on the table's dataset (per-dataset overrides applied)."""
    if model in DETERMINISTIC:
        return True
    if model != "calrec":
        return False
    from calrec.config import CALRecConfig

    c = CALRecConfig.from_params(params)
    untrained = not c.training.stage1 and c.training.stage2_steps == 0 and c.training.backbone != "tiny"
    return untrained and c.inference.inference == "likelihood" and c.inference.candidates == "all"


@dataclass
class VariantRuns:
    variant: str
    seeds: list[int]
    records: list[dict]
    per_user: list[pd.DataFrame]  # one frame per seed: user, target, above, ties
    metrics: list[dict] = field(default_factory=list)  # stored means per seed

    def ranks(self, i: int) -> Ranks:
        df = self.per_user[i]
        return Ranks(df["above"].to_numpy(), df["ties"].to_numpy())

    def user_metric(self, metric: str, ks, seeds=None) -> np.ndarray:
        """Per-user metric averaged over `seeds` (default: all this variant ran; users aligned by id)."""
        frames = []
        for i, df in enumerate(self.per_user):
            if seeds is not None and self.seeds[i] not in seeds:
                continue
            m = metrics_from_ranks(self.ranks(i), ks)[metric]
            frames.append(pd.Series(m, index=df["user"].to_numpy()))
        return pd.concat(frames, axis=1).mean(axis=1).sort_index().to_numpy()

    def seed_means(self, metric: str) -> np.ndarray:
        return np.array([m[metric] for m in self.metrics])


@dataclass
class Missing:
    """Cells a table leaves out: not run (or damaged, or of another configuration), and those
    computed on other data than the dataset's files give now."""
    cells: list[str] = field(default_factory=list)
    other_data: list[str] = field(default_factory=list)


def load_runs(suite: Suite, root: Path, dataset: str, also: tuple[Path, ...] = ()) -> tuple[dict[str, VariantRuns], Missing]:
    """Runs whose stored config hash matches the suite as it is now, computed on the data as it
    is now (where its files can be read here); also the cells left out. A cell missing from `root`
    is read from the first folder of `also` that holds it (scored predictions beside the committed
    runs, without copying them)."""
    stores = [RunStore(root), *(RunStore(r) for r in also)]
    runs: dict[str, VariantRuns] = {}
    missing = Missing()
    cells = plan(suite, datasets=[dataset])
    version = data_version(cells[0].dataset) if cells else None
    for cell in cells:
        why = None
        for store in stores:
            out = store.cell_dir(suite.name, dataset, cell.variant.key, cell.seed)
            why = store.check_cell(out, config_hash(cell.config()), version)
            if why is None:
                break
        if why is not None:
            (missing.other_data if why.startswith(OTHER_DATA) else missing.cells).append(cell.name)
            continue
        vr = runs.setdefault(cell.variant.key, VariantRuns(cell.variant.key, [], [], []))
        vr.seeds.append(cell.seed)
        vr.records.append(store.record(out))
        vr.per_user.append(store.read_per_user(out))
        vr.metrics.append(json.loads((out / "metrics.json").read_text()))
    _same_users(dataset, runs)
    return runs, missing


def _same_users(dataset: str, runs: dict[str, VariantRuns]) -> None:
    """Every cell must score the same test users: tests pair them by user and the seed means would
    otherwise average over different people. Equal configs and data give equal users, so a cell that
    differs was copied or edited by hand; which one is right cannot be told, so both are named."""
    first = None
    for vr in runs.values():
        for seed, df in zip(vr.seeds, vr.per_user):
            users = frozenset(df["user"])
            if first is None:
                first = (f"{vr.variant}/seed{seed}", users)
            elif users != first[1]:
                raise BenchError(
                    f"{dataset}: {vr.variant}/seed{seed} scored other test users than {first[0]} "
                    f"({len(users - first[1])} of its {len(users)} are not among that cell's {len(first[1])}); "
                    f"a paired test would compare different people: rerun the wrong one with --force")


def epoch_budget(model: str, params: dict) -> int | None:
    """The epochs a config allows: its own `epochs`, else the model's default (None: no such limit).
    Read from the constructor's signature, so records of older configs need no model instance."""
    if "epochs" in params:
        return params["epochs"]
    default = inspect.signature(model_class(model)).parameters.get("epochs")
    return default.default if default is not None and isinstance(default.default, int) else None


def capped(record: dict) -> bool:
    """Whether training ended at its budget rather than by early stopping: epochs run up to the
    limit, or a step budget whose last evaluation was its best (still improving when cut)."""
    info = record.get("model_info") or {}
    model = record["config"]["model"]
    if info.get("epochs_run") is not None:
        budget = epoch_budget(model["name"], model["params"])
        return isinstance(budget, int) and info["epochs_run"] >= budget
    stage = (info.get("timings") or {}).get("stage2") or {}
    return bool(stage.get("steps")) and stage.get("best_step") == stage["steps"]

"""How long a cell will take, from the stored runs of the same model (what `bench plan` prints).

Estimates come from stored runs of the same model on the same dataset and device, those on this very
machine where there are any (two 2-core CPU models differ 1.5-3x in speed). Runs with the same
settings give their own fit time (early stopping and validation included, stages loaded from the
shared cache counted at their training time, CALRec's frozen-layer cache counted as built: `bench plan`
names what a build costs once; a shuffled-history row, whose cache its seed keys, counts its own build); where only another machine ran them, that time scaled by how much
slower this machine was on a training both ran. Runs with other settings are scaled
by the planned training budget (epochs, or CALRec's stage steps), an upper bound where early stopping
ends training sooner. CALRec's steps differ widely in size (template, history, batch), so it is
scaled by tokens where it can: the tokens a step of a run with the same training settings took (on
any device) times this device's seconds a token; without such a run it is scaled by steps and labelled
a rough guess (a paper-template step costs ~10x a compact, cached one). Settings left out of a run's
config are compared as CALRec's defaults. A CALRec run that trains other layers, or another way
(LoRA, the frozen-layer cache), says nothing of what a token costs (every layer trained, uncached:
~30x a cached top-4 token on 2 cores), so with no such run on the device a cell has no estimate,
and says why, rather than one that low. Prediction scales by the
number of test users. Rows that reuse another cell's trained weights (CALRec's inference variants)
count their training once, and rows that share a CALRec stage I (the same seed and settings but for
stage II's) count its training once.
A cell with no stored run of its model on its dataset is scaled from the model's runs on other
datasets: an epoch by what an epoch of other models run on both datasets cost more (those sharing its
wrapper first: RecBole validates by full ranking, which grows faster than the interactions), else by
the ratio of interactions, and scoring by the ratio of items: a rough guess, since history lengths
and settings differ, and labelled so. With no run of its model on its device, it has no
estimate, and says so.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import MISSING, fields
from functools import cache

import numpy as np

from bench.execute import provenance
from bench.report.costs import device as machine
from bench.execute.records import (budget, fit_seconds, frozen_cache_seconds, record_device, stages, timings,
                                   tokens_run, train_seconds, units_run)
from bench.execute.runner import Cell


def n_test_users(cell: Cell, recs: list[dict]) -> int | None:
    users = recs[0]["dataset_stats"]["users"] if recs else None
    sample = cell.suite.user_sample
    if sample is not None and users is not None:
        return min(sample["size"], users)
    return users


def _runs(n: int) -> str:
    return f"{n} stored run{'s' if n > 1 else ''}"


def scaled_training(model: str, params: dict, want: float | None, same: list[dict], recs: list[dict]
                    ) -> tuple[float | None, str]:
    """Training seconds of a cell whose settings no stored run on its device shares, and how it was found;
    None where no run there says what its tokens cost (CALRec training other layers, or uncached)."""
    if want == 0:
        return 0.0, ""
    if model == "calrec":  # a token costs ~5-30x more with every layer trained, or without the frozen cache
        compute = compute_settings(params)
        same = [r for r in same if compute_settings(r["config"]["model"]["params"]) == compute]
        if not same:
            return None, f"no stored run on this device trains as it does ({compute})"
    if model == "calrec" and want:  # by tokens: CALRec's steps differ widely in size
        setting = training_settings(model, params)
        twins = [tokens_run(r) / units_run(r) for r in recs  # any device: a step's size does not depend on it
                 if training_settings(model, r["config"]["model"]["params"]) == setting and tokens_run(r) and units_run(r)]
        cost = [train_seconds(r) / t for r in same if (t := tokens_run(r))]
        if twins and cost:
            tokens = float(np.median(twins)) * want
            return tokens * float(np.median(cost)), (f"; {tokens:,.0f} tokens (step size: {_runs(len(twins))} of this "
                                                     "training, any device) at this device's s/token")
        # Else a window's size from runs that build the same prompts, times this row's windows a step.
        prompts = prompt_settings(params)
        per_window = [tokens_run(r) / (units_run(r) * _batch(r["config"]["model"]["params"])) for r in recs
                      if prompt_settings(r["config"]["model"]["params"]) == prompts and tokens_run(r) and units_run(r)]
        if per_window and cost:
            tokens = float(np.median(per_window)) * _batch(params) * want
            return tokens * float(np.median(cost)), (f"; {tokens:,.0f} tokens (window size: {_runs(len(per_window))} "
                                                     "with the same prompts, any device) at this device's s/token")
    per_unit = [train_seconds(r) / units_run(r) for r in same if units_run(r)]
    if want is not None and per_unit:
        # CALRec's step cost moves ~10x with its template, history, vocabulary and frozen cache
        guess = "; rough guess: no run of this training says what a step costs" if model == "calrec" else ""
        return float(np.median(per_unit)) * want, guess
    return float(np.median([train_seconds(r) for r in same])), ""


def epoch_cost_ratios(history: dict[tuple[str, str], list[dict]], kind: str, device: str, target: str
                      ) -> dict[str, tuple[float, str]]:
    """source dataset -> (an epoch on `target` over one on source, the models that measured it): the
    median ratio over other epoch-trained models run on both on one machine, those sharing this
    model's wrapper first (RecBole's architectures share its trainer and its full-ranking validation,
    which grows with users x items, not with interactions)."""
    def per_epoch(recs: list[dict]) -> dict[str, float]:  # machine -> median seconds an epoch
        by = defaultdict(list)
        for r in recs:
            if record_device(r) == device and r["config"]["model"]["name"] != "calrec" and units_run(r):
                by[machine(r)].append(train_seconds(r) / units_run(r))
        return {m: float(np.median(x)) for m, x in by.items()}

    by_source = defaultdict(dict)
    for (k, spec), recs in history.items():
        if spec == target or k == kind:
            continue
        there, here = per_epoch(history.get((k, target), [])), per_epoch(recs)
        if shared := there.keys() & here.keys():  # the same machine on both: CPU models differ ~1.5x in speed
            by_source[spec][k] = float(np.median([there[m] / here[m] for m in shared]))
    out = {}
    for spec, ratios in by_source.items():
        near = {k: v for k, v in ratios.items() if k.split(":")[0] == kind.split(":")[0]} or ratios
        out[spec] = float(np.median(list(near.values()))), ", ".join(sorted(near))
    return out


def on_this_machine(recs: list[dict], here: str | None, device: str) -> tuple[list[dict], str]:
    """The runs on `here` if there are any (two 2-core CPU models differ 1.5-3x in speed), else all;
    and how a basis names where they ran."""
    local = [r for r in recs if here and machine(r) == here]
    return (local, f"{device}, this machine") if local else (recs, device)


def from_other_datasets(cell: Cell, device: str, others: list[dict], stats: dict | None,
                        cost_ratios: dict[str, tuple[float, str]] | None = None, here: str | None = None
                        ) -> tuple[float | None, float | None, str]:
    """A guess for a model never run on this dataset, from its runs on other datasets (this device):
    an epoch costs more by what other models' epochs cost more there (`cost_ratios`, see
    epoch_cost_ratios), else by the ratio of interactions, for as many epochs as its early-stopped runs
    took (none: this cell's whole budget); a model not trained by epochs scales its whole fit by
    interactions; CALRec by tokens as on its own dataset; a test user costs the items ratio more. Runs
    on `here` are preferred, as in `estimate`."""
    model, params = cell.variant.model, cell.variant.params_for(cell.dataset.key)
    same = [r for r in others if record_device(r) == device and r.get("dataset_stats")]
    if stats is None or not same:
        return None, None, "no stored run of this model on this dataset"
    same, where = on_this_machine(same, here, device)
    want, cost_ratios = budget(model, params), cost_ratios or {}
    trained = [r for r in same if units_run(r)]

    def by_interactions(r: dict) -> float:
        return stats["interactions"] / r["dataset_stats"]["interactions"]

    if model == "calrec" and trained:  # by tokens, as on its own dataset (prompts are capped at max_history items)
        train, how = scaled_training(model, params, want, trained, others)
        if train is None:
            return None, None, how
        scaled = ""
    elif not trained:  # not trained by epochs (popularity, ItemKNN, BM25): its whole fit scales
        ratio = [by_interactions(r) for r in same]
        train, how = float(np.median([train_seconds(r) * q for r, q in zip(same, ratio)])), ""
        scaled = f", scaled by interactions (x{np.median(ratio):.1f}) and items"
    else:
        specs = [r["config"]["dataset"]["spec"] for r in trained]
        ratio = [cost_ratios[s][0] if s in cost_ratios else by_interactions(r) for r, s in zip(trained, specs)]
        stopped = [units_run(r) for r in trained if units_run(r) < (budget(model, r["config"]["model"]["params"]) or np.inf)]
        units = min(float(np.median(stopped)), want or np.inf) if stopped else want or float(np.median([units_run(r) for r in trained]))
        train = float(np.median([train_seconds(r) / units_run(r) * q for r, q in zip(trained, ratio)])) * units
        how = f" for {units:.0f} epochs ({'as its early-stopped runs there' if stopped else 'its budget' if want else 'as its runs there'})"
        measured = sorted({cost_ratios[s][1] for s in specs if s in cost_ratios})
        scaled = (f", an epoch x{np.median(ratio):.1f} (as for {'; '.join(measured)} there)" if measured
                  else f", scaled by interactions (x{np.median(ratio):.1f})") + " and items"
    users = n_test_users(cell, [{"dataset_stats": stats}])
    per_user = np.median([r["predict_seconds"] / max(r["evaluated_users"], 1) * stats["items"] / r["dataset_stats"]["items"]
                          for r in same])
    datasets = ", ".join(sorted({r["config"]["dataset"]["spec"] for r in same}))
    return train, float(per_user * users), f"a guess: {_runs(len(same))} on {datasets} ({where}){how}{scaled}"


def this_machine() -> str:
    """This machine as run records name theirs ("AMD EPYC (2 cores)", or the accelerator)."""
    return machine({"machine": provenance.machine()})


def estimate(cell: Cell, device: str, recs: list[dict], others: list[dict] = (), stats: dict | None = None,
             cost_ratios: dict[str, tuple[float, str]] | None = None, here: str | None = None
             ) -> tuple[float | None, float | None, str]:
    """Training and scoring seconds of a cell from `recs` (its model's runs on its dataset), else from
    `others` (its model's runs elsewhere) scaled to `stats` (its dataset's, from any stored run). Runs on
    `here` (this machine, as `this_machine` names it) are preferred where there are any."""
    model, params = cell.variant.model, cell.variant.params_for(cell.dataset.key)
    if not recs:
        return from_other_datasets(cell, device, list(others), stats, cost_ratios, here)
    same = [r for r in recs if record_device(r) == device]
    if not same:
        return None, None, f"stored runs only on {record_device(recs[0])}"
    local, where = on_this_machine(same, here, device)
    exact = [r for r in local if r["config"]["model"]["params"] == params]
    speed, how = 1.0, ""
    if not exact and (moved := same_settings_elsewhere(model, params, same, here)):
        exact, speed, where, how = moved  # the same settings on another machine beat other settings on this one
    if exact:  # the same settings: their own fit times, early stopping and validation included
        local = exact
        train = float(np.median([fit_seconds(r) for r in exact])) * speed
    else:
        train, how = scaled_training(model, params, budget(model, params), local, recs)
        if train is None:
            return None, None, how
    build, built = own_cache_build(model, params, local)
    train, how = train + build * speed, how + built
    users = n_test_users(cell, local)
    per_user = np.median([r["predict_seconds"] / max(r["evaluated_users"], 1) for r in local])
    predict = float(per_user * users * speed) if users else None
    what = "same settings" if exact else "other settings"
    return train, predict, f"{_runs(len(local))} ({where}, {what}){how}"


def own_cache_build(model: str, params: dict, recs: list[dict]) -> tuple[float, str]:
    """Seconds a cell spends building a frozen-layer cache no other cell builds for it, and what it says.
    Estimates count CALRec's cache as built (one serves every row and seed sharing its windows), but a
    shuffled-history row keys its cache by the seed that shuffled it (calrec/frozen.py `cache_key`):
    each of its seeds builds its own, as long as the builds of its stored runs with these settings."""
    if model != "calrec" or not (params.get("shuffle_history") and params.get("frozen_cache")):
        return 0.0, ""
    builds = [s for r in recs if r["config"]["model"]["params"] == params and (s := frozen_cache_seconds(r)) > 60]
    if not builds:  # a load takes ~1 s; no stored build says what one costs
        return 0.0, ""
    seconds = float(np.median(builds))
    return seconds, f"; with its own frozen-layer cache, keyed by its seed ({seconds / 60:.0f} min to build)"


def same_settings_elsewhere(model: str, params: dict, recs: list[dict], here: str
                            ) -> tuple[list[dict], float, str, str] | None:
    """Runs of exactly these settings on another machine, and how many times slower this machine is
    (`speed_ratio`), where some training ran on both; None where none did (or `here` ran nothing)."""
    found = []
    for there in sorted({machine(r) for r in recs} - {here}):
        runs = [r for r in recs if machine(r) == there and r["config"]["model"]["params"] == params]
        if runs and (ratio := speed_ratio(model, recs, there, here)):
            found.append((runs, ratio[0], f"{record_device(runs[0])}, {there}",
                          f"; x{ratio[0]:.2f} for this machine (the seconds a training unit took on both, "
                          f"{_runs(ratio[1])} here)"))
    return max(found, key=lambda f: len(f[0])) if found else None


def speed_ratio(model: str, recs: list[dict], there: str, here: str) -> tuple[float, int] | None:
    """How many times longer a training unit (epoch or step) takes on `here` than on `there`: the median,
    over training settings both machines ran, of the ratio of their median seconds a unit; and how many
    runs here it rests on. Stages loaded from a cache are left out (their time is another run's)."""
    per = defaultdict(lambda: defaultdict(list))  # training settings -> machine -> seconds a unit
    for r in recs:
        if (m := machine(r)) in (there, here) and (unit := _seconds_a_unit(r)):
            per[training_settings(model, r["config"]["model"]["params"])][m].append(unit)
    both = [by for by in per.values() if by.get(there) and by.get(here)]
    if not both:
        return None
    return (float(np.median([np.median(by[here]) / np.median(by[there]) for by in both])),
            sum(len(by[here]) for by in both))


def _seconds_a_unit(rec: dict) -> float | None:
    own = [t for t in stages(rec) if not t.get("cached") and t.get("steps")]
    if own:  # CALRec: the stages this run trained itself
        return sum(t.get("train_seconds", 0.0) for t in own) / sum(t["steps"] for t in own)
    units = units_run(rec) if not stages(rec) else None
    return train_seconds(rec) / units if units else None


def training_settings(model: str, params: dict) -> str:
    """The settings that shape a model's training: for CALRec, all but its inference settings."""
    params = dict(params)
    if model == "calrec":
        from calrec.config import InferenceConfig

        for f in fields(InferenceConfig):
            params.pop(f.name, None)
    return json.dumps(params, sort_keys=True, default=str)


# CALRec settings that set how many tokens a training window holds, and what a token costs.
PROMPT_SETTINGS = ("template", "item_fields", "max_history", "max_prompt_tokens", "natural_titles", "examples", "target")
COMPUTE_SETTINGS = ("backbone", "train_layers", "frozen_cache", "lora_r")


@cache
def _calrec_defaults() -> dict:
    from calrec.config import GROUPS

    return {f.name: f.default for dc in GROUPS.values() for f in fields(dc) if f.default is not MISSING}


def _calrec_settings(params: dict, names: tuple[str, ...]) -> dict:
    """`names` as CALRec reads them: a setting left out is its default (compared as such)."""
    defaults = _calrec_defaults()
    return {k: params.get(k, defaults.get(k)) for k in names}


def prompt_settings(params: dict) -> str:
    return json.dumps(_calrec_settings(params, PROMPT_SETTINGS), sort_keys=True, default=str)


def compute_settings(params: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in _calrec_settings(params, COMPUTE_SETTINGS).items())


def _batch(params: dict) -> int:
    return int(_calrec_settings(params, ("batch_size",))["batch_size"])


# CALRec settings that shape stage II only: cells differing in nothing else share one stage I.
STAGE2_ONLY = ("stage2_steps", "eval_every", "patience", "select", "valid_users")


def stage1_key(cell: Cell) -> tuple | None:
    """Cells with the same key share CALRec's stage-I weights (None: no stage I)."""
    params = cell.variant.params_for(cell.dataset.key)
    if cell.variant.model != "calrec" or not params.get("stage1"):
        return None
    return (cell.dataset.key, cell.seed, stage1_settings_of(params))


def stage1_settings_of(params: dict) -> str:
    return training_settings("calrec", {k: v for k, v in params.items() if k not in STAGE2_ONLY})


def stage1_seconds(params: dict, recs: list[dict]) -> float:
    """Stage-I training time in stored runs with the same stage I (0.0 where none says)."""
    setting = stage1_settings_of(params)
    times = [t["train_seconds"] for r in recs if stage1_settings_of(r["config"]["model"]["params"]) == setting
             and "train_seconds" in (t := timings(r).get("stage1") or {})]
    return float(np.median(times)) if times else 0.0


def training_key(cell: Cell) -> tuple:
    """Cells with the same key share one trained model (CALRec: everything but inference settings)."""
    if cell.variant.model == "calrec":
        return (cell.dataset.key, cell.seed, "calrec", training_settings("calrec", cell.variant.params_for(cell.dataset.key)))
    return (cell.dataset.key, cell.seed, cell.variant.key)


def dataset_stats(history: dict[tuple[str, str], list[dict]], spec: str) -> dict | None:
    """A dataset's size as any stored run of it recorded."""
    return next((r["dataset_stats"] for (_, s), recs in history.items() if s == spec for r in recs
                 if r.get("dataset_stats")), None)

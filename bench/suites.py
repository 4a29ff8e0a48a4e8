"""Suite files (YAML): datasets x model variants x seeds, plus what the tables compare.

    description: ...
    seeds: [0, 1, 2]
    ks: [1, 5, 10, 20]
    history_masking: true
    user_sample: {size: 500, seed: 0}      # optional: every model is scored on the same users
    valid_sample: {size: 200, seed: 1}     # optional: users for model selection (validation)
    datasets:
      ml-100k: {}                          # key = spec unless `spec:` is given; the rest are loader params
    models:                                # named variants: this is how ablations are declared
      pop: {model: pop, group: baseline}
      sasrec-big: {model: sasrec, params: {hidden: 128}, datasets: {ml-1m: {epochs: 200}}}
    reference: pop                         # significance marks in the main table compare with this
    ablations: {losses: [calrec-nig, calrec-all]}  # first row of each is that table's reference
    check: {tolerance: {default: 1.0e-9}}
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.errors import BenchError

SUITE_DIR = Path(__file__).parent / "suites"
TOP_KEYS = {"description", "seeds", "ks", "history_masking", "user_sample", "valid_sample", "datasets", "models",
            "reference", "ablations", "check", "eval_batch"}
VARIANT_KEYS = {"model", "params", "datasets", "group", "label", "seeds"}
# Keys become folder names under results/: letters, digits, '.', '_', '-' only (no '..', no '/').
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _key(value, where: str) -> str:
    key = str(value)
    if not KEY.match(key) or ".." in key:
        raise BenchError(f"{where}: {key!r} is not a valid name (letters, digits, '.', '_', '-'; it becomes a folder)")
    return key


@dataclass(frozen=True)
class DatasetEntry:
    key: str
    spec: str
    params: dict


@dataclass(frozen=True)
class Variant:
    key: str
    model: str
    params: dict
    per_dataset: dict  # dataset key -> params overriding `params`
    group: str  # "baseline" or "ours": the headline row compares the best of each
    label: str
    seeds: tuple | None = None  # overrides the suite's seeds (deterministic models need one)

    def params_for(self, dataset_key: str) -> dict:
        return {**self.params, **self.per_dataset.get(dataset_key, {})}


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    datasets: list[DatasetEntry]
    variants: list[Variant]
    seeds: list[int]
    ks: list[int]
    history_masking: bool
    user_sample: dict | None
    valid_sample: dict | None
    reference: str | None
    ablations: dict[str, list[str]] = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    eval_batch: int = 256

    def variant(self, key: str) -> Variant:
        for v in self.variants:
            if v.key == key:
                return v
        raise BenchError(f"suite {self.name}: no model variant {key!r} (has {', '.join(v.key for v in self.variants)})")


def suite_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise BenchError(f"{p}: suite file not found")
        if p.resolve().parent != SUITE_DIR.resolve() and p.stem in available_suites():
            # its runs would land in (and overwrite) the committed suite's store
            raise BenchError(f"{p}: a suite file from elsewhere may not share the name of the committed suite "
                             f"{p.stem!r}; rename the file")
        _key(p.stem, f"{p}: suite name")
        return p
    p = SUITE_DIR / f"{name}.yaml"
    if not p.is_file():
        raise BenchError(f"unknown suite {name!r} (known: {', '.join(available_suites())})")
    return p


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BenchError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _sample(value, where: str) -> dict | None:
    if value is None:
        return None
    v = _mapping(value, where)
    if set(v) - {"size", "seed"} or not isinstance(v.get("size"), int) or v["size"] < 1:
        raise BenchError(f"{where}: expected {{size: <positive int>, seed: <int>}}")
    return {"size": v["size"], "seed": int(v.get("seed", 0))}


def load_suite(name: str) -> Suite:
    path = suite_path(name)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise BenchError(f"{path}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    raw = _mapping(raw, str(path))
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise BenchError(f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    for key in ("datasets", "models"):
        if not raw.get(key):
            raise BenchError(f"{path}: '{key}' is missing or empty")
    datasets = []
    for key, val in _mapping(raw["datasets"], f"{path}: datasets").items():
        params = dict(_mapping(val, f"{path}: datasets.{key}"))
        datasets.append(DatasetEntry(_key(key, f"{path}: datasets"), str(params.pop("spec", key)), params))
    variants = []
    for key, val in _mapping(raw["models"], f"{path}: models").items():
        key = _key(key, f"{path}: models")
        val = _mapping(val, f"{path}: models.{key}")
        bad = set(val) - VARIANT_KEYS
        if bad:
            raise BenchError(f"{path}: models.{key}: unknown key {sorted(bad)[0]!r} (allowed: {', '.join(sorted(VARIANT_KEYS))})")
        if "model" not in val:
            raise BenchError(f"{path}: models.{key}: missing 'model'")
        per_dataset = _mapping(val.get("datasets"), f"{path}: models.{key}.datasets")
        for dkey in per_dataset:
            if dkey not in {d.key for d in datasets}:
                raise BenchError(f"{path}: models.{key}.datasets names unknown dataset {dkey!r}")
        seeds = val.get("seeds")
        variants.append(Variant(
            key=str(key), model=str(val["model"]), params=_mapping(val.get("params"), f"{path}: models.{key}.params"),
            per_dataset={k: _mapping(v, f"{path}: models.{key}.datasets.{k}") for k, v in per_dataset.items()},
            group=str(val.get("group", "baseline")), label=str(val.get("label", key)),
            seeds=tuple(int(s) for s in seeds) if seeds is not None else None,
        ))
    keys = {v.key for v in variants}
    ablations = {str(k): list(v) for k, v in _mapping(raw.get("ablations"), f"{path}: ablations").items()}
    for table, rows in ablations.items():
        for r in rows:
            if r not in keys:
                raise BenchError(f"{path}: ablations.{table} names unknown model variant {r!r}")
    reference = raw.get("reference")
    if reference is not None and reference not in keys:
        raise BenchError(f"{path}: reference {reference!r} is not a model variant of this suite")
    seeds = raw.get("seeds", [0])
    ks = raw.get("ks", [1, 5, 10, 20])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise BenchError(f"{path}: seeds must be a non-empty list of integers")
    if not (isinstance(ks, list) and ks and all(isinstance(k, int) and k > 0 for k in ks)):
        raise BenchError(f"{path}: ks must be a non-empty list of positive integers")
    return Suite(
        name=path.stem, path=path, description=str(raw.get("description", "")), datasets=datasets,
        variants=variants, seeds=seeds, ks=sorted(ks), history_masking=bool(raw.get("history_masking", True)),
        user_sample=_sample(raw.get("user_sample"), f"{path}: user_sample"),
        valid_sample=_sample(raw.get("valid_sample"), f"{path}: valid_sample"),
        reference=reference, ablations=ablations, check=_mapping(raw.get("check"), f"{path}: check"),
        eval_batch=int(raw.get("eval_batch", 256)),
    )

"""Suite files (YAML): datasets x model variants x seeds, plus what the tables compare. The
fields and their types are `bench.suites.schema.SuiteSpec`.

    description: ...
    seeds: [0, 1, 2]
    ks: [1, 5, 10, 20]                     # cutoffs; must include 10 (the reports read NDCG@10, Recall@10)
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
from bench.interop.external import is_import_path, register
from bench.suites.schema import load_yaml, parse_overlay, parse_suite

SUITE_DIR = Path(__file__).parent  # the suite files sit beside this module
# Keys become folder names under results/: letters, digits, '.', '_', '-' only (no '..', no '/').
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
KEY_MAX = 100  # a folder name (255 bytes at most) with room for the suffixes written beside it


def _key(value, where: str) -> str:
    key = str(value)
    if not KEY.match(key) or ".." in key:
        raise BenchError(f"{where}: {key!r} is not a valid name (letters, digits, '.', '_', '-'; it becomes a folder)")
    if len(key) > KEY_MAX:
        raise BenchError(f"{where}: {key[:20]}... is {len(key)} characters long; a name becomes a folder, so at most {KEY_MAX}")
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
    group: str  # "ours": the method the suite studies (CALRec), else "baseline" (whoever implemented it); the headline row compares the best of each
    label: str
    seeds: tuple | None = None  # overrides the suite's seeds (deterministic models need one)
    tune: dict = field(default_factory=dict)  # name -> TuneRange: what `bench tune` searches
    tuned: dict | None = None  # dataset -> the study and trial it came from; runs only on these datasets
    only: tuple | None = None  # runs only on these datasets (a scored predictions file is for one)

    def runs_on(self, dataset_key: str) -> bool:
        return (self.tuned is None or dataset_key in self.tuned) and (self.only is None or dataset_key in self.only)

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
    published: str | None = None  # bench/report/published/<name>.yaml
    findings: dict | None = None  # {note, questions: [{question, table, rows}]}: bench/report/findings.py
    cell_timeout: float | None = None  # seconds a cell may compute before it is ended (bench run --cell-timeout)

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


def overlay_path(results: Path, suite_name: str, kind: str = "tune") -> Path:
    """Where `bench tune` (kind 'tune') writes the tuned variants and `bench score` (kind 'scored')
    the externally trained models that `load_suite(..., results)` adds to a suite."""
    return Path(results) / kind / suite_name / "overlay.yaml"


OVERLAYS = ("tune", "scored")


def update_overlay(path: Path, header: str, edit) -> None:
    """Read an overlay, let `edit(raw)` change the mapping in place, and rewrite it atomically, under
    a lock so writers in parallel processes (searches, scored files) do not lose each other's entries.
    An exception from `edit` leaves the file as it was."""
    import fcntl

    from bench.execute.store import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".overlay.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        raw = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None) or {"models": {}}
        edit(raw)
        atomic_write_text(path, header + yaml.safe_dump(raw, sort_keys=False, width=120))


def _read_yaml(path: Path) -> dict:
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise BenchError(f"{path}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError as e:
        raise BenchError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if not isinstance(raw, dict):
        raise BenchError(f"{path}: expected a mapping of suite fields, got {type(raw).__name__}")
    return raw


def _variants(models: dict, path: Path, dataset_keys: set[str]) -> list[Variant]:
    variants = []
    for key, v in models.items():
        key = _key(key, f"{path}: models")
        for dkey in [*v.datasets, *(v.tuned or {}), *(v.only or [])]:
            if dkey not in dataset_keys:
                raise BenchError(f"{path}: models.{key} names unknown dataset {dkey!r}")
        variants.append(Variant(key=key, model=v.model, params=v.params, per_dataset=v.datasets, group=v.group,
                                label=v.label if v.label is not None else key,
                                seeds=tuple(v.seeds) if v.seeds is not None else None,
                                tune=dict(v.tune), tuned=v.tuned, only=tuple(v.only) if v.only else None))
    return variants


def _load_overlay(path: Path, dataset_keys: set[str]) -> tuple[list[Variant], dict[str, list[str]]]:
    spec = parse_overlay(_read_yaml(path), path)
    return _variants(spec.models, path, dataset_keys), dict(spec.ablations)


def load_suite(name: str, results: Path | None = None) -> Suite:
    """The suite file, plus the variants `bench tune` and `bench score` wrote under `results` (if given)."""
    path = suite_path(name)
    spec = parse_suite(_read_yaml(path), path)
    datasets = []
    for key, params in spec.datasets.items():
        params = dict(params or {})
        datasets.append(DatasetEntry(_key(key, f"{path}: datasets"), str(params.pop("spec", key)), params))
    dataset_keys = {d.key for d in datasets}
    variants = _variants(spec.models, path, dataset_keys)
    for v in variants:  # a model named by import path joins the registry (bench/interop/external.py)
        if is_import_path(v.model):
            register(v.model, f"{path}: models.{v.key}")
    ablations = dict(spec.ablations)
    for overlay in [overlay_path(results, path.stem, kind) for kind in OVERLAYS] if results is not None else []:
        if not overlay.is_file():
            continue
        extra, more = _load_overlay(overlay, dataset_keys)
        for v in extra:
            if any(v.key == w.key for w in variants):
                raise BenchError(f"{overlay}: model variant {v.key!r} is already in the suite; rename it")
            if is_import_path(v.model):
                register(v.model, f"{overlay}: models.{v.key}")
        variants += extra
        for table in more:
            if table in ablations:
                raise BenchError(f"{overlay}: ablation table {table!r} is already in the suite; rename it")
        ablations.update(more)
    keys = {v.key for v in variants}
    for table, rows in ablations.items():
        for r in rows:
            if r not in keys:
                raise BenchError(f"{path}: ablations.{table} names unknown model variant {r!r}")
        twice = sorted({r for r in rows if rows.count(r) > 1})
        if twice:  # shown twice and counted twice in the table's Holm family
            raise BenchError(f"{path}: ablations.{table} names model variant {twice[0]!r} more than once")
    for i, q in enumerate(spec.findings.questions if spec.findings else []):
        where = f"{path}: findings.questions.{i}"
        if q.table not in spec.ablations:
            raise BenchError(f"{where}.table: {q.table!r} is not an ablation table of this suite "
                             f"({', '.join(spec.ablations) or 'it has none'})")
        if unknown := [r for r in q.rows if r not in spec.ablations[q.table][1:]]:  # the reference is no test of itself
            raise BenchError(f"{where}.rows: ablations.{q.table} tests no row {unknown[0]!r} against its reference")
    if spec.reference is not None and spec.reference not in keys:
        raise BenchError(f"{path}: reference {spec.reference!r} is not a model variant of this suite")
    if spec.published is not None:
        from bench.report.published import load_published

        try:
            load_published(spec.published)
        except BenchError as e:
            raise BenchError(f"{path}: published: {e}") from None
    sample = lambda s: s.model_dump() if s is not None else None  # noqa: E731
    return Suite(
        name=path.stem, path=path, description=spec.description, datasets=datasets, variants=variants,
        seeds=spec.seeds, ks=sorted(spec.ks), history_masking=spec.history_masking,
        user_sample=sample(spec.user_sample), valid_sample=sample(spec.valid_sample), reference=spec.reference,
        ablations=ablations, check=spec.check.model_dump(), eval_batch=spec.eval_batch, published=spec.published,
        findings=spec.findings.model_dump() if spec.findings else None, cell_timeout=spec.cell_timeout,
    )

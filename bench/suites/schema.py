"""Type checks for what users write: the suite file (one pydantic schema) and model parameters
(checked against the annotations of the model's constructor or config dataclasses). Strict: a YAML
`yes` is not an int and `"5"` is not a number; an int is accepted where a float is expected.
Every failure is one line naming the file and the field."""
from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bench.errors import BenchError

SEED_MAX = 2**32 - 1  # numpy's and torch's seed range


class _NoDuplicateKeys(yaml.SafeLoader):
    """YAML keeps the last of a key written twice in one mapping, without a word: a model variant
    copied and not renamed would silently replace the first one (its cells never run). This loader
    refuses it; values a `<<` merge brings in may still be overridden, as YAML means them to be."""


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    first: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first on line {first[key] + 1})",
                    key_node.start_mark)
            first[key] = key_node.start_mark.line
        except TypeError:  # an unhashable key: construct_mapping says so
            pass
    return loader.construct_mapping(node, deep=True)


_NoDuplicateKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str):
    """yaml.safe_load that refuses a key written twice in one mapping (a yaml.YAMLError with its line)."""
    return yaml.load(text, Loader=_NoDuplicateKeys)  # noqa: S506 -- a SafeLoader subclass


def one_table_cell(text: str) -> str:
    """Labels and questions are printed as table cells: a '|' or a line break would split the row."""
    bad = next((c for c in text if c == "|" or (ord(c) < 32 and c != " ") or c in "\x7f\u2028\u2029"), None)
    if bad is not None:
        raise ValueError(f"holds {bad!r}, which a table cell cannot (one line, no '|')")
    return text


CellText = Annotated[str, AfterValidator(one_table_cell)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SampleSpec(_Strict):
    size: int = Field(ge=1)
    seed: int = Field(default=0, ge=0, le=SEED_MAX)


class TuneRange(_Strict):
    """One searched parameter: a range (`low`/`high`, integers if both are, `log` scale, `step`) or
    `choices`. A dotted name sets a key inside a dict parameter (RecBole's `config.embedding_size`)."""
    low: Optional[Union[int, float]] = None
    high: Optional[Union[int, float]] = None
    log: bool = False
    step: Optional[Union[int, float]] = None
    choices: Optional[list[Union[bool, int, float, str, None]]] = Field(default=None, min_length=1)


class VariantSpec(_Strict):
    model: str
    params: dict[str, Any] = {}
    datasets: dict[str, dict[str, Any]] = {}
    group: Literal["baseline", "ours"] = "baseline"
    label: Optional[CellText] = None
    seeds: Optional[list[int]] = Field(default=None, min_length=1)
    tune: dict[str, TuneRange] = {}  # the space `python -m bench tune` searches (bench/execute/tune.py)
    tuned: Optional[dict[str, dict[str, Any]]] = None  # written by `bench tune`: dataset -> study and trial
    only: Optional[list[str]] = Field(default=None, min_length=1)  # runs only on these datasets (e.g. `bench score`'s)


class OverlaySpec(_Strict):
    """results/tune/<suite>/overlay.yaml (`bench tune`) or results/scored/<suite>/overlay.yaml
    (`bench score`): variants (and their tables) added to a suite."""
    models: dict[str, VariantSpec] = {}
    ablations: dict[str, list[str]] = {}


class CheckSpec(_Strict):
    tolerance: dict[str, float] = {}


class QuestionSpec(_Strict):
    question: CellText = Field(min_length=1)
    table: str  # one of the suite's ablation tables
    rows: list[str] = Field(min_length=1)  # rows of that table, each read against its reference (its first row)


class FindingsSpec(_Strict):
    """What the suite's ablation shows, question by question (bench/report/findings.py: the README's
    findings table and the forest plot `bench plot` draws)."""
    note: str = ""  # what the rows are, in words, under the table
    questions: list[QuestionSpec] = Field(min_length=1)


class SuiteSpec(_Strict):
    description: str = ""
    seeds: list[int] = Field(default=[0], min_length=1)
    ks: list[int] = Field(default=[1, 5, 10, 20], min_length=1)
    history_masking: bool = True
    user_sample: Optional[SampleSpec] = None
    valid_sample: Optional[SampleSpec] = None
    datasets: dict[str, Optional[dict[str, Any]]] = Field(min_length=1)
    models: dict[str, VariantSpec] = Field(min_length=1)
    reference: Optional[str] = None
    ablations: dict[str, list[str]] = {}
    check: CheckSpec = CheckSpec()
    eval_batch: int = Field(default=256, ge=1)
    published: Optional[str] = None  # bench/report/published/<name>.yaml: published numbers beside ours
    findings: Optional[FindingsSpec] = None
    cell_timeout: Optional[float] = Field(default=None, gt=0)  # seconds; a cell past it fails and the suite goes on


def check_tune(space: dict[str, TuneRange], where: str) -> None:
    for name, r in space.items():
        at = f"{where}.{name}"
        if r.choices is not None:
            if r.low is not None or r.high is not None or r.log or r.step is not None:
                raise BenchError(f"{at}: give either choices or low/high, not both")
            continue
        if r.low is None or r.high is None:
            raise BenchError(f"{at}: needs low and high (or choices)")
        if not r.low < r.high:
            raise BenchError(f"{at}: low ({r.low!r}) must be below high ({r.high!r})")
        if r.log and (r.low <= 0 or r.step is not None):
            raise BenchError(f"{at}: a log scale needs low > 0 and no step")
        if r.step is not None and not r.step > 0:
            raise BenchError(f"{at}: step must be > 0, not {r.step!r}")


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _owner(top: type, loc: tuple) -> type:
    """The schema class a location inside `top` belongs to (to list its allowed keys)."""
    if len(loc) == 1:
        return top
    if loc[0] == "models":
        return TuneRange if len(loc) == 5 and loc[2] == "tune" else VariantSpec
    return SampleSpec if loc[0].endswith("sample") else CheckSpec


def _validated(cls: type, raw: Any, path):
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        err = min(e.errors(), key=lambda x: x["type"] != "extra_forbidden")  # a typo'd key says more than the key it lacks
        loc, kind = err["loc"], err["type"]
        parent = _where(loc[:-1]) or "suite"
        if kind == "extra_forbidden":
            owner = _owner(cls, loc)
            raise BenchError(f"{path}: {parent}: unknown key {loc[-1]!r} (allowed: {', '.join(owner.model_fields)})") from None
        if kind == "missing":
            raise BenchError(f"{path}: {parent}: missing {loc[-1]!r}") from None
        raise BenchError(f"{path}: {_where(loc)}: {err['msg'][0].lower()}{err['msg'][1:]} (got {err['input']!r})") from None


def parse_overlay(raw: Any, path) -> OverlaySpec:
    spec = _validated(OverlaySpec, raw, path)
    for key, v in spec.models.items():
        check_tune(v.tune, f"{path}: models.{key}.tune")
    return spec


def parse_suite(raw: Any, path) -> SuiteSpec:
    """The suite file's mapping, type-checked; the first problem as one line."""
    spec = _validated(SuiteSpec, raw, path)
    for where, seeds in [("seeds", spec.seeds)] + [(f"models.{k}.seeds", v.seeds or []) for k, v in spec.models.items()]:
        for s in seeds:
            if not 0 <= s <= SEED_MAX:
                raise BenchError(f"{path}: {where}: seed {s} is outside 0..{SEED_MAX}")
    for key, v in spec.models.items():
        check_tune(v.tune, f"{path}: models.{key}.tune")
    for k in spec.ks:
        if k < 1:
            raise BenchError(f"{path}: ks: {k} is not a positive cutoff")
    if 10 not in spec.ks:  # the per-seed, tests, breakdown and plot reports read NDCG@10 and Recall@10
        raise BenchError(f"{path}: ks: {spec.ks} lacks 10 (the reports beside the tables show NDCG@10 and Recall@10)")
    if len(set(spec.ks)) != len(spec.ks):
        twice = sorted({k for k in spec.ks if spec.ks.count(k) > 1})
        raise BenchError(f"{path}: ks: {', '.join(map(str, twice))} given twice (each cutoff is one column)")
    for name, t in spec.check.tolerance.items():
        if not t >= 0:
            raise BenchError(f"{path}: check.tolerance.{name}: must be a number >= 0, not {t!r}")
    return spec


# pydantic's error types for a value of the right type outside an annotation's declared range
BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number", "multiple_of")

# Ranges for parameter annotations: `neighbours: Annotated[int, AT_LEAST_1]`.
AT_LEAST_1 = Field(ge=1)
NON_NEGATIVE = Field(ge=0, allow_inf_nan=False)
SEED = Field(ge=0, le=SEED_MAX)


def type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    return text or str(annotation).replace("typing.", "")


def check_params(owner: str, hints: dict[str, Any], params: dict) -> None:
    """Each parameter that has an annotation must be of that type."""
    for name, value in params.items():
        if name not in hints:
            continue
        try:
            TypeAdapter(hints[name]).validate_python(value, strict=True)
        except ValidationError as e:
            err = e.errors()[0]
            if err["type"] in BOUNDS:  # the right type, outside the range the annotation declares
                raise BenchError(f"{owner}: parameter {name!r} {err['msg'].removeprefix('Input ')}, not {value!r}") from None
            hint = ""
            if isinstance(value, str) and _is_number(value):
                hint = " (YAML reads a number like 1e-3 as text; write 1.0e-3)"
            raise BenchError(f"{owner}: parameter {name!r} must be {type_name(hints[name])}, "
                             f"not {type(value).__name__} {value!r}{hint}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def constructors(cls: type):
    """The `__init__`s a call of `cls(**params)` reaches: its own, then its parents' for as long as
    each passes **kwargs on (UniSRec and SASRec + LLM vectors take SASRec's settings that way)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        yield init
        if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
            break


def init_hints(cls: type) -> dict[str, Any]:
    """Annotations of the constructor's parameters, following **kwargs up the class hierarchy."""
    hints: dict[str, Any] = {}
    for init in constructors(cls):
        resolved = typing.get_type_hints(init, include_extras=True)  # keep Annotated ranges
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name in resolved:
                hints.setdefault(p.name, resolved[p.name])
    return hints

"""Published numbers beside ours: a committed data file per setup (bench/report/published/<name>.yaml) with
each number's source and the protocol differences, and one markdown table per target dataset.

A suite names its file with `published: <name>`; `bench table` then writes
`<dataset>-published.md` for every suite dataset the file has numbers for. The published rows are
copied from their sources, never computed; our rows are the suite's stored runs (mean over seeds,
± the standard deviation over seeds where a row has several).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from pydantic import Field, ValidationError, model_validator
from tabulate import tabulate

from bench.errors import BenchError
from bench.suites.schema import _Strict, load_yaml

PUBLISHED_DIR = Path(__file__).parent / "published"


class Source(_Strict):
    short: str  # what the table's Source column says
    cite: str  # the full reference, in the notes


class Published(_Strict):
    description: str
    sources: dict[str, Source] = Field(min_length=1)
    methods: dict[str, str] = Field(min_length=1)  # method -> source key
    metrics: list[str] = Field(min_length=1)
    protocol: list[str] = []  # how the published setup differs from this harness's
    targets: dict[str, dict[str, list[float]]] = Field(min_length=1)  # dataset key -> method -> values

    @model_validator(mode="after")
    def _consistent(self) -> "Published":
        for method, source in self.methods.items():
            if source not in self.sources:
                raise ValueError(f"methods.{method}: unknown source {source!r} (known: {', '.join(self.sources)})")
        for target, rows in self.targets.items():
            for method, values in rows.items():
                if method not in self.methods:
                    raise ValueError(f"targets.{target}.{method}: not listed under methods")
                if len(values) != len(self.metrics):
                    raise ValueError(f"targets.{target}.{method}: {len(values)} values for {len(self.metrics)} metrics")
        return self


def load_published(name: str) -> Published:
    path = PUBLISHED_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PUBLISHED_DIR.glob("*.yaml")))
        raise BenchError(f"published numbers {name!r}: no file {path} (known: {known})")
    try:
        return Published.model_validate(load_yaml(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as e:
        raise BenchError(f"{path}: not valid YAML ({e})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise BenchError(f"{path}: {where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None


def published_markdown(suite, dataset: str, runs: dict, pub: Published) -> str:
    """The published rows of one target, then the suite's rows, on the file's metrics."""
    rows = [[m, pub.sources[pub.methods[m]].short, *(f"{v:.4f}" for v in values)] for m, values in pub.targets[dataset].items()]
    for v in suite.variants:
        vr = runs.get(v.key)
        if vr is None:
            rows.append([v.label, "this harness", *(["not run yet"] * len(pub.metrics))])
            continue
        cells = []
        for metric in pub.metrics:
            per_seed = vr.seed_means(metric)
            sd = f" ±{per_seed.std(ddof=1):.4f}" if len(per_seed) > 1 else ""
            cells.append(f"{float(np.mean(per_seed)):.4f}{sd}")
        rows.append([v.label, f"this harness ({len(vr.seeds)} seed{'s' if len(vr.seeds) > 1 else ''})", *cells])
    body = tabulate(rows, headers=["Model", "Source", *pub.metrics], tablefmt="pipe", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * len(pub.metrics))
    notes = [pub.description, *(f"{src.short}: {src.cite}" for src in pub.sources.values()), *pub.protocol,
             f"This harness: history masking {'on' if suite.history_masking else 'off'}; score ties count at their "
             f"expected rank; "
             + (f"a seeded sample of {suite.user_sample['size']} test users" if suite.user_sample else "all test users")
             + "; published rows are copied from their sources, not recomputed."]
    return (f"### {suite.name}: {dataset}, beside the published numbers\n\n{body}\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")

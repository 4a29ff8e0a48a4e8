"""The model contract and the registry.

A model is any object with
    fit(split, ctx)                       -> None   # train on split.train; select on split.valid
    predict(histories, users)             -> scores (len(users) x n_items ndarray, higher = better)
                                             or ranked item lists (best first), one per user
so the evaluator never needs to know which model it scores. Add a model with one file and one line
in MODELS ("module:attribute", imported lazily so heavy libraries load only when used).
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from bench.errors import BenchError
from bench.suites.schema import check_params, init_hints
from bench.split import Split


@dataclass
class FitContext:
    """What a model may use while fitting, beside the split."""

    seed: int
    workdir: Path  # the cell's scratch folder: checkpoints, caches (kept across resumes)
    valid_users: np.ndarray  # users for model selection on validation (never test)
    ks: Sequence[int] = (1, 5, 10, 20)
    curves: list[dict] = field(default_factory=list)  # training curves, stored beside the run
    extra: dict[str, Any] = field(default_factory=dict)


class Recommender(Protocol):
    def fit(self, split: Split, ctx: FitContext) -> None: ...

    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray | list[np.ndarray]: ...


MODELS: dict[str, str] = {
    "pop": "baselines.simple:Popularity",
    "random": "baselines.simple:RandomScores",
    "itemknn": "baselines.itemknn:ItemKNN",
    "bm25-text": "baselines.text_bm25:BM25Text",
    "sasrec": "baselines.sasrec:SASRec",
    "llm-sasrec": "baselines.llm_sasrec:LLMSASRec",
    "unisrec": "baselines.unisrec:UniSRec",
    "semantic-ids": "baselines.semantic_ids:SemanticIDRec",
    "bert4rec": "baselines.bert4rec:BERT4Rec",
    "recbole": "baselines.recbole_adapter:RecBoleModel",
    "calrec": "calrec.recommender:CALRec",
}


def model_class(name: str) -> type:
    if name not in MODELS:
        raise BenchError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    module, attr = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_model(name: str, params: dict) -> Recommender:
    cls = model_class(name)
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as e:
        raise BenchError(f"model {name!r}: bad parameters {sorted(params)} ({e})") from None
    check_params(f"model {name!r}", init_hints(cls), params)
    return cls(**params)


def is_scores(prediction) -> bool:
    return isinstance(prediction, np.ndarray) and prediction.ndim == 2 and prediction.dtype.kind == "f"

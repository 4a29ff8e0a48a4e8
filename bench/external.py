"""Models from outside this package: a suite may name a model by import path,

    mymodel: {model: "mypackage.module:MyModel", params: {...}}

so a researcher adds a model without editing bench/models.py. It is checked like a built-in one
(importable, a class with fit and predict, its parameters against its constructor's annotations)
and fingerprinted by its module's source and what it imports from its own package
(bench/execute/fingerprint.py finds them where Python does), so editing it stales its cells.
"""
from __future__ import annotations

import importlib
import re

from bench.errors import BenchError
from bench.models import MODELS

IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


def is_import_path(model: str) -> bool:
    return ":" in model


def register(model: str, where: str) -> None:
    """Make `model` ("module:Class") a registry entry, after checking that it imports and is a model."""
    if model in MODELS:
        return
    if not IMPORT_PATH.fullmatch(model):
        raise BenchError(f"{where}: model {model!r} is neither a built-in one ({', '.join(sorted(MODELS))}) "
                         f"nor an import path 'package.module:Class'")
    module, attr = model.split(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise BenchError(f"{where}: model {model!r}: cannot import {module} ({e})") from None
    except AttributeError:
        raise BenchError(f"{where}: model {model!r}: {module} has no {attr!r}") from None
    if not isinstance(cls, type) or not all(callable(getattr(cls, m, None)) for m in ("fit", "predict")):
        raise BenchError(f"{where}: model {model!r} is not a class with fit(split, ctx) and predict(histories, users)")
    MODELS[model] = model

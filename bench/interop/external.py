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
        imported = importlib.import_module(module)
    except ImportError as e:
        raise BenchError(f"{where}: model {model!r}: cannot import {module} ({e}); is its folder on PYTHONPATH?") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing: one line, not a traceback
        raise BenchError(f"{where}: model {model!r}: importing {module} failed: {type(e).__name__}: {e}") from None
    if getattr(imported, "__file__", None) is None:  # a folder without the module: a namespace package
        found = ", ".join(str(p) for p in getattr(imported, "__path__", [])) or "a folder"
        raise BenchError(f"{where}: model {model!r}: Python imported {module} as the folder {found}, which has no "
                         f"{module.split('.')[-1]}.py or __init__.py; put the folder that holds your module on "
                         f"PYTHONPATH (or run from it)")
    try:
        cls = getattr(imported, attr)
    except AttributeError:
        raise BenchError(f"{where}: model {model!r}: {module} has no {attr!r}") from None
    if not isinstance(cls, type) or not all(callable(getattr(cls, m, None)) for m in ("fit", "predict")):
        raise BenchError(f"{where}: model {model!r} is not a class with fit(split, ctx) and predict(histories, users)")
    MODELS[model] = model

"""Makes RecBole 1.2.1 importable and honest on this stack (numpy 2, torch 2.13, no tensorboard).
Each fix answers one breakage listed in docs/recbole.md; `import_recbole()` applies them once."""
from __future__ import annotations

import contextlib
import os
import sys
import types

import numpy as np
import torch

_DONE = False


class _NoSummaryWriter:
    """RecBole's Trainer always opens a tensorboard writer; we log nothing through it."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _numpy_aliases() -> None:
    # Config.compatibility_settings reads aliases that NumPy 2 removed.
    for alias, real in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, alias):
            setattr(np, alias, real)


def _tensorboard_stub() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = _NoSummaryWriter
        sys.modules["torch.utils.tensorboard"] = stub


def import_recbole():
    """Import RecBole's training path with the fixes applied; returns the `recbole` package."""
    global _DONE
    if not _DONE:
        _numpy_aliases()
        _tensorboard_stub()
        import recbole.model.sequential_recommender  # noqa: F401  (sine.py turns anomaly mode on)

        # Anomaly detection made a SASRec step 1.5x slower and finds nothing we act on.
        torch.autograd.set_detect_anomaly(False)
        _DONE = True
    import recbole

    return recbole


@contextlib.contextmanager
def hidden_argv():
    """RecBole's Config parses sys.argv: a harness flag like --seeds=1 would silently override it.
    It also sets CUDA_VISIBLE_DEVICES from `gpu_id` for the whole process; restored here, so a
    CPU-only RecBole model leaves the GPU visible to the models after it."""
    saved, visible = sys.argv, os.environ.get("CUDA_VISIBLE_DEVICES")
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


def load_checkpoint(path: str) -> dict:
    # RecBole pickles its Config inside checkpoints; torch >= 2.6 refuses that by default. We load
    # only files RecBole just wrote in this run's own folder.
    return torch.load(path, weights_only=False, map_location="cpu")

"""Training state saved after every epoch, so a cell that outlives a session resumes at its next
epoch instead of from scratch (our SASRec on ML-1M: ~85 s an epoch on 2 CPU cores, hours to
converge).

The state holds everything the next epoch depends on: weights, optimizer and weight-average state,
early stopping, the best weights so far, the curves, and every random generator a step draws from
(batch order, BERT4Rec's masks, each FastDropout's, torch's). So a resumed run ends with the same
weights, to the bit, as one that was never stopped (`tests/test_baselines.py`).

It is written only under a key the runner gives (the cell's config hash and code fingerprint,
`ctx.extra["checkpoint_key"]`), and a state saved under another key is ignored: a cell never resumes
from another configuration or other code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from baselines.dropout import FastDropout
from bench.execute.store import PROGRESS, atomic_write_text

FILE = "train_state.pt"


def generators(net: torch.nn.Module, rng: np.random.Generator | None) -> list[np.random.Generator]:
    """Every numpy generator a training step draws from, in a fixed order."""
    return ([rng] if rng is not None else []) + [m.rng for m in net.modules() if isinstance(m, FastDropout)]


def save(path: Path, key: str, state: dict, gens: list[np.random.Generator]) -> None:
    state = {**state, "key": key, "generators": [g.bit_generator.state for g in gens], "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-save leaves the previous epoch's state whole
    progress = {"key": key, "done": f"{state['epoch']} of {state['epochs']} epochs", "seconds": round(state["seconds"], 1)}
    atomic_write_text(path.parent / PROGRESS, json.dumps(progress))


def clear(path: Path) -> None:
    """Training ended: a forced rerun starts from scratch."""
    path.unlink(missing_ok=True)
    (path.parent / PROGRESS).unlink(missing_ok=True)


def load(path: Path, key: str, gens: list[np.random.Generator]) -> dict | None:
    """The saved state (generators and torch's RNG already restored), or None when there is none
    under this key."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != key or len(state["generators"]) != len(gens):
        return None
    for g, s in zip(gens, state["generators"]):
        g.bit_generator.state = s
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state

"""Training state saved after every epoch, so a cell that outlives a session resumes at its next
epoch instead of from scratch (our SASRec on ML-1M: ~85 s an epoch on 2 CPU cores, hours to
converge).

The state holds everything the next epoch depends on: weights, optimizer and weight-average state,
early stopping, the best weights so far, the curves, and every random generator a step draws from
(batch order, BERT4Rec's masks, each FastDropout's, torch's). So a resumed run ends with the same
weights, to the bit, as one that was never stopped (`tests/test_baselines.py`).

A sha256 is kept beside it: a damaged state (bytes changed, truncated, unreadable) is said in one
line and removed, and training starts from scratch; it never jams its cell.

It is written only under a key the runner gives (the cell's config hash and code fingerprint,
`ctx.extra["checkpoint_key"]`), and a state saved under another key is ignored: a cell never resumes
from another configuration or other code.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from baselines.dropout import FastDropout
from tqdm import tqdm

from bench.execute.store import PROGRESS, atomic_write_checked, atomic_write_text, checksum_path, read_checked

FILE = "train_state.pt"


def generators(net: torch.nn.Module, rng: np.random.Generator | None) -> list[np.random.Generator]:
    """Every numpy generator a training step draws from, in a fixed order."""
    return ([rng] if rng is not None else []) + [m.rng for m in net.modules() if isinstance(m, FastDropout)]


def save(path: Path, key: str, state: dict, gens: list[np.random.Generator]) -> None:
    state = {**state, "key": key, "generators": [g.bit_generator.state for g in gens], "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_checked(path, buf.getvalue())  # a kill mid-save leaves the previous epoch's state whole
    progress = {"key": key, "done": f"{state['epoch']} of {state['epochs']} epochs", "seconds": round(state["seconds"], 1)}
    atomic_write_text(path.parent / PROGRESS, json.dumps(progress))


def clear(path: Path) -> None:
    """Training ended: a forced rerun starts from scratch."""
    for p in (path, checksum_path(path), path.parent / PROGRESS):
        p.unlink(missing_ok=True)


def load(path: Path, key: str, gens: list[np.random.Generator]) -> dict | None:
    """The saved state (generators and torch's RNG already restored), or None when there is none
    under this key."""
    data, why = read_checked(path)
    state = None
    if data is not None:
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- whatever a damaged file raises, the state is not usable
            why = f"unreadable ({type(e).__name__})"
    if state is None:
        if why is not None:
            tqdm.write(f"{path}: {why}; removed, training starts from scratch")
            clear(path)
        return None
    if not isinstance(state, dict) or state.get("key") != key or len(state["generators"]) != len(gens):
        return None
    for g, s in zip(gens, state["generators"]):
        g.bit_generator.state = s
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state

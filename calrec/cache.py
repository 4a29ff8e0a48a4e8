"""CALRec's shared caches (stage weights, frozen-layer states, the chosen weights' validation
numbers): an entry that cannot be trusted is rebuilt, with a line, instead of failing the cell or
being used. Each entry is written atomically with its sha256 beside it
(`bench.execute.store.atomic_write_checked`), so two runners of the same stage cannot mix their
bytes, and bytes changed inside a still-valid container (a damaged weight) are caught on reading."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from bench.execute.distributed import agree, gather_objects, is_main
from bench.execute.store import atomic_write_checked, read_checked


def digest(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def stage_dir(shared: Path, stage: str) -> Path:
    """The folder of a stage's trained weights (`stage1`, `stage2`)."""
    return shared / f"calrec-{stage}"


def stage_path(shared: Path, stage: str, key: dict) -> Path:
    """Where a stage's trained weights are kept: one file per training key (code fingerprint included)."""
    return stage_dir(shared, stage) / f"{digest(key)}.pt"


def read_stage(path: Path, key: dict | None = None, device: str | torch.device = "cpu") -> dict | None:
    """A stage entry as `write_stage` saved it ({"state", "timing", "key", "curves"}), by read_cache's rules."""
    return read_cache(path, lambda b: torch.load(io.BytesIO(b), map_location=device, weights_only=False), key)


def write_stage(path: Path, entry: dict) -> None:
    buf = io.BytesIO()
    torch.save(entry, buf)
    write_cache(path, buf.getvalue())


def validation_path(shared: Path, key: dict, valid: str) -> Path:
    """Where the validation numbers of the weights trained under `key` are kept, per validation sample."""
    return shared / "calrec-validation" / f"{digest({**key, 'valid': valid})}.json"


def write_cache(path: Path, data: bytes) -> None:
    atomic_write_checked(path, data)


def read_cache(path: Path, load: Callable[[bytes], Any], key: dict | None = None,
               valid: Callable[[Any], bool] | None = None) -> Any | None:
    """What `load(bytes)` returns, or None where there is no entry, its bytes do not match the
    checksum kept beside it, it cannot be read (a write cut short by a full disk, a file another
    torch cannot unpickle), with `key` it was saved under another key, or `valid` refuses what it
    holds; the caller then rebuilds it. Under a multi-process launch every rank reads the entry, and
    all use it only if all could, so the ranks stay in step."""
    if not agree(path.exists()):  # rank 0 decides: every rank reads, or every rank rebuilds
        return None
    got, why = None, None
    try:
        data, why = read_checked(path)
        got = load(data) if data is not None else None
    except Exception as e:  # noqa: BLE001 -- whatever makes an entry unreadable, it is rebuilt, never trusted
        why = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    else:
        if got is not None and key is not None and (not isinstance(got, dict) or got.get("key") != key):
            got, why = None, "saved under another configuration"
        elif got is not None and valid is not None and not valid(got):
            got, why = None, "it holds something other than what it should"
    if all(gather_objects(got is not None)):
        return got
    if is_main():
        tqdm.write(f"{path}: {why or 'unreadable on another rank'}; rebuilding it")
    return None

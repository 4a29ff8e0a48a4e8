"""Trained stage weights carried across a verified re-fingerprint.

Stage weights (and the chosen weights' validation numbers) are cached under a key that holds the
cell's code fingerprint, so weights are reused only under the code that trained them. When
`bench refingerprint --verify` shows that today's code computes what a cell's code computed, the
cell's record moves to today's fingerprint; the weights that cell trained or read are outputs of
the same computation, so they move with it, and the rows that share them (inference variants run
after a refactor) read them instead of training them again.

An entry moves only where a verified cell vouches for it: its key names one of the fingerprints
that cell was verified from and the cell's seed, and its training record is the one the cell
stored (steps, tokens, selection, seconds: identical). Nothing is overwritten; an entry already
under today's key stays as it is.

Entries are where `calrec.cache.stage_path` and `validation_path` put them, read and written by
`read_stage` and `write_stage`: the rules the model reads and writes them by
(tests/test_calrec_carry.py fits under the new key and checks that it reads what was carried).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from calrec.cache import read_cache, read_stage, stage_dir, stage_path, validation_path, write_cache, write_stage

STAGES = ("stage1", "stage2")


@dataclass(frozen=True)
class VerifiedCell:
    """What a verified CALRec cell says about the weights it used."""
    seed: int
    fingerprint: str  # today's
    verified_from: tuple[str, ...]  # the fingerprints it was verified from, newest first
    timings: dict  # model_info["timings"] as stored
    validation: dict | None  # model_info["validation"] as stored


def _same(a: dict, b: dict) -> bool:
    def plain(d):
        return json.dumps({k: v for k, v in d.items() if k != "cached"}, sort_keys=True, default=str)
    return plain(a) == plain(b)


def carry_weights(shared: Path, cells: list[VerifiedCell]) -> list[Path]:
    """Copy each stage entry (and its validation numbers) a verified cell trained or read to the key
    of today's fingerprint. Returns the paths written."""
    by_code: dict[tuple[str, int], list[VerifiedCell]] = {}
    for cell in cells:
        for old in cell.verified_from:
            if old != cell.fingerprint:
                by_code.setdefault((old, cell.seed), []).append(cell)
    written: list[Path] = []
    if not by_code:
        return written
    entries = {stage: sorted(stage_dir(shared, stage).glob("*.pt")) for stage in STAGES}
    valid_digests = set()
    loaded = {}
    for stage, paths in entries.items():
        for path in paths:
            saved = read_stage(path)
            if isinstance(saved, dict) and isinstance(saved.get("key"), dict):
                loaded[path] = (stage, saved)
                valid_digests.add((saved["key"].get(stage) or {}).get("valid"))
    valid_digests.discard(None)
    for path, (stage, saved) in loaded.items():
        key = saved["key"]
        for cell in by_code.get((key.get("code"), key.get("seed")), []):
            if not isinstance(cell.timings.get(stage), dict) or not _same(saved.get("timing") or {}, cell.timings[stage]):
                continue
            new_key = {**key, "code": cell.fingerprint}
            target = stage_path(shared, stage, new_key)
            if not target.exists():
                write_stage(target, {**saved, "key": new_key})
                written.append(target)
            written += _carry_validation(shared, key, new_key, valid_digests, cell.validation)
            break
    return written


def _carry_validation(shared: Path, key: dict, new_key: dict, valid_digests: set, numbers: dict | None) -> list[Path]:
    """The validation numbers of the weights under `key`, where the cell stored the same ones."""
    if not numbers:
        return []
    for valid in sorted(valid_digests):
        old, new = validation_path(shared, key, valid), validation_path(shared, new_key, valid)
        if new.exists() or not old.exists():
            continue
        saved = read_cache(old, json.loads)
        if saved is not None and json.dumps(saved, sort_keys=True) == json.dumps(numbers, sort_keys=True):
            write_cache(new, json.dumps(saved).encode())
            return [new]
    return []


__all__ = ["VerifiedCell", "carry_weights"]

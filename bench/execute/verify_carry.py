"""After a verified re-fingerprint: the trained weights of the verified cells follow their records.

A model whose weights are cached under the cell's code fingerprint (CALRec's stages) would train them
again after any refactor, though `bench refingerprint --verify` has shown the code computes the same.
Here every current cell that was verified names the fingerprints it was verified from (its record
names the last one; its earlier versions in git history, the same run re-fingerprinted, name the ones
before), and the model's cache moves what that cell trained or read to today's key
(`calrec.carry`)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.execute.fingerprint import _cell, staleness


def _git(where: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=60)


def earlier_versions(run_json: Path) -> list[dict]:
    """The cell's record as committed over git history, newest first (none outside a repository)."""
    try:
        revs = _git(run_json.parent, "log", "--format=%H", "--", run_json.name).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = []
    for rev in revs:
        shown = _git(run_json.parent, "show", f"{rev}:./{run_json.name}")
        if shown.returncode != 0:
            continue
        try:
            out.append(json.loads(shown.stdout))
        except json.JSONDecodeError:
            continue  # a version that is not a record: nothing to learn from it
    return out


def verified_chain(run_json: Path, record: dict) -> tuple[str, ...]:
    """The fingerprints the record's run was verified from, newest first: the one its record names,
    then, for each, the one that version of the same run (same start time) named in git history."""
    chain: list[str] = []
    current, versions = record, None
    while True:
        old = ((current.get("code") or {}).get("verified_from") or {}).get("fingerprint")
        if not old or old in chain:
            return tuple(chain)
        chain.append(old)
        if versions is None:
            versions = earlier_versions(run_json)
        current = next((v for v in versions if (v.get("code") or {}).get("fingerprint") == old
                        and v.get("started") == record.get("started")), None)
        if current is None:
            return tuple(chain)


def carry_verified_weights(results: Path) -> list[Path]:
    """Carry the cached stage weights of every current, verified CALRec cell to today's key; the
    paths written."""
    from bench.execute.store import RunStore
    from calrec.carry import VerifiedCell, carry_weights

    store = RunStore(results)
    cells = []
    for cell in store.cells():
        record = store.record(cell)
        if record is None or _cell(record)[0] != "calrec" or staleness(record) is not None:
            continue  # only a current record vouches for the code it ran
        code = record.get("code") or {}
        if not code.get("verified_from"):
            continue
        info = record.get("model_info") or {}
        cells.append(VerifiedCell(int(record["config"]["seed"]), code["fingerprint"], verified_chain(cell / "run.json", record),
                                  info.get("timings") or {}, info.get("validation")))
    return carry_weights(store.root / "cache" / "shared", cells)


__all__ = ["carry_verified_weights", "verified_chain"]

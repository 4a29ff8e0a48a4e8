"""A verified re-fingerprint (`bench refingerprint --verify`): for code that moved but should not
move numbers.

A stale cell (its sources changed since it ran) is rewritten to today's fingerprint only where a
check shows today's code computes what the cell's commit computed: each affected row's model is
fitted and ranks on a small synthetic dataset, with its own parameters made tiny (few steps, a tiny
random LLM for CALRec), once in a git worktree at the commit the cell recorded and once in this
checkout, and the two digests of its predictions and training-curve numbers must be identical.
A cell computed from uncommitted edits (a "-dirty" commit) is checked on its sources rebuilt from
the per-file hashes it recorded: the worktree at its commit, each source the cell's code read put
back as the version (today's, or one in git history) whose hash is the one recorded; where any
source cannot be found so, the cell stays stale.
Where they differ, or the check cannot run (an unknown commit, a dirty one that cannot be rebuilt,
a changed dataset loader or evaluator the synthetic check does not exercise, an error), the cell
stays stale and the report says why. An honest result: a change that moves a number must stale
its cells.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from tqdm.auto import tqdm

from bench.execute.fingerprint import (ROOT, SCHEME, _cell, changed_files, code_content, code_record, model_target,
                                      staleness)

PROBE = Path(__file__).with_name("verify_probe.py")
# Sources whose change the synthetic check cannot vouch for: real-data loaders and the evaluator
# (the check compares predictions, not metrics). synthetic.py is what the check reads itself.
UNCHECKED = ("bench/evaluate.py", "bench/datasets/")
CHECKED = ("bench/datasets/synthetic.py", "bench/datasets/base.py")
PROBE_TIMEOUT_S = 1800


# Sizes only: every switch of a CALRec row stays as its suite sets it (tests/test_suite_rows.py runs every
# suite row shrunk this way, so a combination of switches that cannot train fails in seconds).
CALREC_SMALL = {"backbone": "tiny", "batch_size": 4, "contrastive_batch": 0, "micro_batch": 0, "valid_users": 6,
                "device": "cpu", "bf16": False, "threads": 1, "n_samples": 2, "max_new_tokens": 8, "list_length": 20,
                "warmup": 1, "max_history": 5}


def tiny_params(model: str, params: dict) -> dict:
    """The row's parameters with its budget made tiny; every switch that picks a code path kept."""
    if model == "calrec":
        p = {**params, **CALREC_SMALL}
        if p.get("stage1"):  # another synthetic domain and the target: the mixture's path (and the {spec:} form)
            p["stage1"] = {**p["stage1"], "datasets": [{"spec": "sample:synthetic", "users": 20, "seed": 0}, "synthetic"],
                           "steps": 2}
        if p.get("stage2_steps", 1):
            p["stage2_steps"], p["eval_every"] = 2, 1
        if p.get("item_fields"):  # the synthetic items have a Title and a Category
            p["item_fields"] = [f for f in p["item_fields"] if f in ("Title", "Category")] or ["Title"]
        if p.get("train_layers"):
            p["train_layers"] = 1  # the tiny model has two layers: one frozen, one trained
        if isinstance(p.get("candidates"), dict):
            p["candidates"] = {k: min(v, 5) for k, v in p["candidates"].items()}
        return p
    p = dict(params)
    if model in ("llm-sasrec", "unisrec"):
        p["backbone"] = "tiny"
    if model == "unisrec" and (p.get("pretrain") or {}).get("steps"):
        p["pretrain"] = {**p["pretrain"], "steps": 3, "datasets": [{"spec": "sample:synthetic", "users": 20, "seed": 0},
                                                                   "synthetic"]}
    for key, cap in (("epochs", 2), ("patience", 1)):
        if key in p:
            p[key] = min(p[key], cap)
    if model in ("sasrec", "bert4rec", "recbole", "llm-sasrec", "unisrec"):
        p.setdefault("epochs", 2)
    return p


def _job(record: dict) -> dict:
    model = record["config"]["model"]
    return {"model": model["name"], "params": tiny_params(model["name"], model.get("params") or {})}


def _key(job: dict) -> str:
    return hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]


HISTORY_DEPTH = 200  # commits searched for a source version a dirty cell recorded


def _short(data: bytes, scheme: int) -> str:
    return hashlib.sha1(code_content(data, scheme)).hexdigest()[:12]


def rebuilt_sources(record: dict) -> dict[str, bytes] | None:
    """The sources a cell read, each as the version whose hash the cell recorded (today's file, else a
    version in git history), or None where one cannot be found (or the record kept no per-file hashes)."""
    code = record.get("code") or {}
    files, scheme = code.get("files"), code.get("scheme")
    if not files or scheme is None:
        return None
    return _rebuilt(tuple(sorted(files.items())), scheme)


@lru_cache(maxsize=None)  # why_unverifiable and verify both ask, for every cell of one recorded code
def _rebuilt(files: tuple[tuple[str, str], ...], scheme: int) -> dict[str, bytes] | None:
    out = {}
    for rel, want in files:
        path = Path(rel) if Path(rel).is_absolute() else ROOT / rel
        if path.is_file() and _short(path.read_bytes(), scheme) == want:
            out[rel] = path.read_bytes()
            continue
        if Path(rel).is_absolute():
            return None  # a module outside the repository: no history to look in
        revs = subprocess.run(["git", "rev-list", f"--max-count={HISTORY_DEPTH}", "--all", "--", rel], cwd=ROOT,
                              capture_output=True, text=True).stdout.split()
        for rev in revs:
            shown = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True)
            if shown.returncode == 0 and _short(shown.stdout, scheme) == want:
                out[rel] = shown.stdout
                break
        else:
            return None
    return out


def why_unverifiable(record: dict) -> str | None:
    model = _cell(record)[0]
    if model_target(model) is None:
        return f"model {model!r} is no longer in the registry"
    commit = record.get("commit") or "unknown"
    if commit == "unknown":
        return f"its commit {commit} does not say what ran"
    if commit.endswith("-dirty") and rebuilt_sources(record) is None:
        return f"its commit {commit} does not say what ran, and its recorded sources are not all found in git history"
    unchecked = [f for f in (changed_files(record) or []) if f.startswith(UNCHECKED) and not f.startswith(CHECKED)]
    if unchecked:
        return f"{', '.join(unchecked)} changed, which the synthetic check does not run"
    return None


def run_probe(tree: Path, jobs: dict[str, dict], scratch: Path) -> dict[str, dict]:
    """The probe's digests for `jobs`, computed by the code in `tree`."""
    scratch.mkdir(parents=True, exist_ok=True)
    probe = scratch / "verify_probe.py"
    shutil.copyfile(PROBE, probe)  # today's probe, so both trees run the same check
    (scratch / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(tree), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, str(probe), str(scratch / "jobs.json"), str(scratch / "out.json")],
                              cwd=tree, env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {k: {"error": f"the check ran past {PROBE_TIMEOUT_S} s"} for k in jobs}
    if done.returncode != 0 or not (scratch / "out.json").is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {k: {"error": f"the check failed in {tree}: {last}"} for k in jobs}
    return json.loads((scratch / "out.json").read_text())


def _worktree(commit: str, where: Path) -> Path | None:
    done = subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(where), commit], cwd=ROOT,
                          capture_output=True, text=True)
    return where if done.returncode == 0 else None


@lru_cache(maxsize=None)
def _commit_time(commit: str) -> int:
    done = subprocess.run(["git", "show", "-s", "--format=%ct", commit.removesuffix("-dirty")], cwd=ROOT,
                          capture_output=True, text=True)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


def pick_commit(a: str, b: str, time=_commit_time) -> str:
    """Of two commits that ran one code (one fingerprint), the one to check it at: a clean one over a
    "-dirty" one, else the newer, whose harness knows every parameter either cell's job passes (an
    older one may predate a switch the newer cell set, and fail on it)."""
    if a.endswith("-dirty") != b.endswith("-dirty"):
        return b if a.endswith("-dirty") else a
    return b if time(b) > time(a) else a


def verify(stale: dict[str, dict]) -> dict[str, str | None]:
    """For each stale cell (name -> record): None where the check shows today's code computes what its
    commit computed, else why it stays stale. Cells that recorded one fingerprint ran on one code, so
    the check runs once per recorded fingerprint, at one of their commits."""
    outcome: dict[str, str | None] = {}
    by_code: dict[str, tuple[str, dict[str, dict]]] = {}  # recorded fingerprint -> (a commit, jobs)
    for name, record in stale.items():
        reason = why_unverifiable(record)
        if reason:
            outcome[name] = reason
            continue
        job = _job(record)
        commit, jobs = by_code.setdefault(record["code"]["fingerprint"], (record["commit"], {}))
        jobs[_key(job)] = job
        by_code[record["code"]["fingerprint"]] = (pick_commit(commit, record["commit"]), jobs)
    if not by_code:
        return outcome
    then: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        tmp = Path(tmp)
        now = run_probe(ROOT, {k: j for _, jobs in by_code.values() for k, j in jobs.items()}, tmp / "now")
        for i, (fp, (commit, jobs)) in enumerate(tqdm(by_code.items(), desc="verify: recorded code", unit="commit")):
            tree = _worktree(commit.removesuffix("-dirty"), tmp / f"tree{i}")
            if tree is None:
                then[fp] = {k: {"error": f"commit {commit[:12]} is not in this repository"} for k in jobs}
                continue
            if commit.endswith("-dirty"):  # the uncommitted sources it ran on, from their recorded hashes
                record = next(r for r in stale.values() if r["code"]["fingerprint"] == fp and r["commit"] == commit)
                for rel, data in (rebuilt_sources(record) or {}).items():
                    if Path(rel).is_absolute():
                        continue  # outside the repository: found where it is
                    (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tree / rel).write_bytes(data)
            try:
                then[fp] = run_probe(tree, jobs, tmp / f"then{i}")
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    for name, record in stale.items():
        if name in outcome:
            continue
        key = _key(_job(record))
        a, b = then[record["code"]["fingerprint"]].get(key, {"error": "not run"}), now.get(key, {"error": "not run"})
        if "error" in a or "error" in b:
            outcome[name] = f"the check could not run: {a.get('error') or b.get('error')}"
        elif a["digest"] != b["digest"]:
            outcome[name] = (f"today's code computes something else than commit {by_code[record['code']['fingerprint']][0][:12]}"
                             f" (the code it recorded) on the check")
        else:
            outcome[name] = None
    return outcome


def verified_record(record: dict) -> dict:
    """The record's `code` rewritten to today's fingerprint, saying what vouched for it."""
    old = record.get("code") or {}
    return {**code_record(*_cell(record)), "verified_from": {"fingerprint": old.get("fingerprint"),
            "scheme": old.get("scheme"), "commit": record["commit"],
            "check": "tiny fit and ranking on synthetic data, identical at the commit and now"
                     + (" (its uncommitted sources rebuilt from their recorded hashes)" if record["commit"].endswith("-dirty") else "")}}


def refingerprint_verified(results: Path) -> dict[str, list[str]]:
    """Rewrite every stale cell whose code the check vouches for; report the others with why."""
    from bench.execute.store import RunStore, atomic_write_text, dumps

    store = RunStore(results)
    stale: dict[str, dict] = {}
    for cell in store.cells():
        record = store.record(cell)
        why = staleness(record) if record is not None and (record.get("code") or {}).get("fingerprint") else None
        if why is not None and "older scheme" not in why:
            stale[cell.relative_to(store.root / "runs").as_posix()] = record
    outcome = verify(stale)
    report: dict[str, list[str]] = {"verified": [], "still stale": []}
    for name, why in sorted(outcome.items()):
        cell = store.root / "runs" / name
        if why is not None:
            report["still stale"].append(f"{name}: {why}")
            continue
        lock = store.lock(cell)
        if lock is None:
            report["still stale"].append(f"{name}: a run holds its lock")
            continue
        try:
            record = store.record(cell)
            if record == stale[name]:  # unchanged since it was checked
                atomic_write_text(cell / "run.json", dumps({**record, "code": verified_record(record)}))
                report["verified"].append(name)
            else:
                report["still stale"].append(f"{name}: its record changed while it was checked")
        finally:
            lock.close()
    return report


__all__ = ["SCHEME", "refingerprint_verified", "tiny_params", "verify"]

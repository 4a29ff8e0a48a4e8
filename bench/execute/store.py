"""The run store: one folder per (suite, dataset, model variant, seed), written atomically.

results/runs/<suite>/<dataset>/<variant>/seed<N>/
    run.json        resolved config + its hash, commit, versions, command, times, machine, data stats
    metrics.json    mean of each per-user metric
    per_user.csv.gz user, target, above, ties (every metric at any K follows from these two numbers)
    curves.csv      training curves, when the model logs any
A cell folder appears only complete (written beside it, then renamed), so a killed suite resumes
cleanly. A cell counts as done only when every file loads and they agree (`check_cell`: its config
hash matches, it was computed on the data the dataset's files give now, per_user.csv.gz holds the
users run.json counts, and the metrics recomputed from it equal metrics.json); a damaged cell is
rerun, with a line saying why. Debris of a killed write (`.seedN.tmp-*`, `.seedN.old-*`) is cleaned
or recovered by `repair`, and a cell being computed is locked (`lock`), so two runs can share one
results folder. Files get the user's umask, not mkstemp's private modes.
"""
from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError
from bench.evaluate import Ranks, metrics_from_ranks


def config_hash(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temp file of a name no other writer uses, then rename: a reader sees the old
    file or the new one, and two processes writing the same path cannot mix their bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# The folders a results folder holds (each written by one command); a file in their place is refused.
RESULT_FOLDERS = ("runs", "tables", "plots", "reference", "tune", "scored", "mlflow", "cache", "perf")


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_write_checked(path: Path, data: bytes) -> None:
    """`data` at `path` and its sha256 beside it (`<name>.sha256`), each written atomically: a reader
    trusts the entry only where the two agree (read_checked)."""
    atomic_write_bytes(path, data)
    atomic_write_text(checksum_path(path), hashlib.sha256(data).hexdigest() + "\n")


def read_checked(path: Path) -> tuple[bytes | None, str | None]:
    """(the entry's bytes, None) where it and its checksum agree; else (None, why not), None for
    the why where there is no entry at all. A cache entry whose bytes changed inside a valid
    container (a flipped weight) is caught here, where unpickling alone would not notice."""
    if not path.is_file():
        return None, None
    try:
        data = path.read_bytes()
        want = checksum_path(path).read_text().strip()
    except OSError as e:
        return None, f"unreadable ({type(e).__name__})"
    if hashlib.sha256(data).hexdigest() != want:
        return None, "its checksum does not match its bytes (damaged)"
    return data, None


def check_results_folder(root: Path, write: bool) -> None:
    """`--results` must be a folder (or not exist yet, where the command writes), and where the
    command writes, a writable one whose sub-folders are folders: one line, not a traceback later."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise BenchError(f"results folder {root} is a file, not a folder")
    for name in RESULT_FOLDERS:
        if (root / name).exists() and not (root / name).is_dir():
            raise BenchError(f"results folder {root}: {root / name} is a file; it must be a folder")
    if not write:
        return
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), root)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"results folder {root} is not writable" + (f" ({probe} is not)" if probe != root else ""))


def per_user_csv(user_ids: np.ndarray, targets: np.ndarray, ranks: Ranks) -> bytes:
    df = pd.DataFrame({"user": user_ids, "target": targets, "above": ranks.above, "ties": ranks.ties})
    buf = io.BytesIO()
    # mtime=0: the same run gives the same bytes, so committed results diff cleanly.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(df.to_csv(index=False).encode())
    return buf.getvalue()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # missing, a folder, not UTF-8, not JSON
        return None


class _DatasetStats(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    dataset: str
    version: str
    preprocessing: str
    users: int
    items: int
    interactions: int
    dropped_users: int
    cold_test_targets: int


class RunRecord(BaseModel):
    """What every reader of a run.json relies on (tables, plan, refingerprint, track); other keys
    are free. A record that does not validate makes its cell not done: `bench run` recomputes it."""
    model_config = ConfigDict(extra="allow", strict=True)
    config: dict
    config_hash: str
    commit: str
    command: str
    started: str
    fit_seconds: float
    predict_seconds: float
    evaluated_users: int
    cold_test_targets_evaluated: int
    dataset_stats: _DatasetStats
    machine: dict
    versions: dict
    model_info: Optional[dict] = None


def record_problem(rec) -> str | None:
    """None for a valid run.json record, else its first problem in a few words."""
    if not isinstance(rec, dict):
        return f"not a JSON object ({type(rec).__name__})"
    try:
        RunRecord.model_validate(rec)
    except ValidationError as e:
        err = e.errors()[0]
        return f"{'.'.join(map(str, err['loc']))}: {err['msg'].lower()}"
    return None


# What a model that checkpoints its training writes beside the checkpoint in its cell's scratch
# folder: {"key": the checkpoint key, "done": "<what is trained, e.g. 12 of 300 epochs>", "seconds": ...},
# so `bench plan` can say which cells resume and from where without loading a model.
PROGRESS = "progress.json"
# How `check_cell` begins its answer for a cell computed on other data (tables list those apart).
OTHER_DATA = "it was computed on other data"


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def cell_dir(self, suite: str, dataset: str, variant: str, seed: int) -> Path:
        return self.root / "runs" / suite / dataset / variant / f"seed{seed}"

    def cache_dir(self, suite: str, dataset: str, variant: str, seed: int) -> Path:
        return self.root / "cache" / suite / dataset / variant / f"seed{seed}"

    def cells(self) -> list[Path]:
        """Every stored cell folder that holds a run.json, any suite, in a stable order."""
        return [p.parent for p in sorted((self.root / "runs").glob("*/*/*/seed*/run.json"))]

    @staticmethod
    def progress(workdir: Path) -> dict | None:
        return _read_json(workdir / PROGRESS)

    @staticmethod
    def record(cell: Path) -> dict | None:
        """The cell's run.json, or None where it is missing, unreadable or not a valid record."""
        rec = _read_json(cell / "run.json")
        return rec if rec is not None and record_problem(rec) is None else None

    def is_done(self, cell: Path, chash: str, data_version: str | None = None) -> bool:
        return self.check_cell(cell, chash, data_version) is None

    def check_cell(self, cell: Path, chash: str, data_version: str | None = None) -> str | None:
        """None when the cell is complete and consistent, else why it must be (re)computed.
        `data_version`: the dataset's version as its files give it now (it carries their content
        hash); a cell computed on other files is not this experiment. None where it cannot be told."""
        if not cell.exists():
            return "not run yet"
        rec = _read_json(cell / "run.json")
        if rec is None:
            return f"{cell / 'run.json'} is missing or unreadable"
        problem = record_problem(rec)
        if problem is not None:
            return f"{cell / 'run.json'} is not a valid record ({problem})"
        if rec.get("config_hash") != chash:
            return "its configuration changed"
        ran_on = (rec.get("dataset_stats") or {}).get("version")
        if data_version is not None and ran_on != data_version:
            return f"{OTHER_DATA} ({ran_on}; the files now give {data_version})"
        try:
            metrics = json.loads((cell / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            return f"{cell / 'metrics.json'} is missing or unreadable"
        try:
            df = self.read_per_user(cell)
            ranks = Ranks(df["above"].to_numpy(), df["ties"].to_numpy())
        except (OSError, EOFError, ValueError, KeyError, gzip.BadGzipFile, pd.errors.ParserError) as e:
            return f"{cell / 'per_user.csv.gz'} is unreadable ({type(e).__name__})"
        twice = df["user"][df["user"].duplicated()]
        if len(twice):  # one user counted twice, another lost: the row count alone would not show it
            return f"{cell / 'per_user.csv.gz'} holds user {twice.iloc[0]!r} twice"
        if "evaluated_users" in rec and len(df) != rec["evaluated_users"]:
            return f"{cell / 'per_user.csv.gz'} holds {len(df)} users, run.json counts {rec['evaluated_users']}"
        ks = rec.get("config", {}).get("ks") or [10]
        recomputed = metrics_from_ranks(ranks, ks)
        if not metrics or set(metrics) != set(recomputed):
            return f"{cell / 'metrics.json'} does not list the metrics of per_user.csv.gz"
        for name, values in recomputed.items():
            if not np.isclose(float(np.mean(values)), metrics[name], rtol=1e-9, atol=1e-12):
                return f"{cell / 'metrics.json'} disagrees with per_user.csv.gz on {name}"
        return None

    @staticmethod
    def repair(cell: Path) -> list[str]:
        """Clean the debris of a write that was killed: temp folders go; an old copy left by a killed
        overwrite is restored if the cell itself is gone, else removed. Returns what it did."""
        done = []
        if not cell.parent.exists():
            return done
        for debris in sorted(cell.parent.glob(f".{cell.name}.tmp-*")):
            shutil.rmtree(debris, ignore_errors=True)
            done.append(f"removed {debris.name}")
        for old in sorted(cell.parent.glob(f".{cell.name}.old-*")):
            if not cell.exists():
                os.replace(old, cell)
                done.append(f"restored {cell.name} from {old.name}")
            else:
                shutil.rmtree(old, ignore_errors=True)
                done.append(f"removed {old.name}")
        return done

    @staticmethod
    def lock(cell: Path):
        """An exclusive lock on one cell (released when the process ends, however it ends), or None
        when another process holds it."""
        cell.parent.mkdir(parents=True, exist_ok=True)
        f = open(RunStore._lock_file(cell), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return None
            raise
        return f

    @staticmethod
    def _lock_file(cell: Path) -> Path:
        return cell.parent / f".{cell.name}.lock"

    @staticmethod
    def is_locked(cell: Path) -> bool:
        """Whether another process is computing this cell now (holds its lock)."""
        if not RunStore._lock_file(cell).exists():
            return False
        try:
            held = RunStore.lock(cell)
        except OSError:  # a folder this process cannot write (read-only runs/): no run of ours holds it
            return False
        if held is None:
            return True
        held.close()
        return False

    @staticmethod
    def write_cell(cell: Path, files: dict[str, bytes | str]) -> None:
        """Write all files into a sibling temp folder, then swap it in with renames."""
        cell.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cell.parent, prefix=f".{cell.name}.tmp-"))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
            for name, data in files.items():
                (tmp / name).write_bytes(data.encode() if isinstance(data, str) else data)
            old = None
            if cell.exists():
                old = cell.with_name(f".{cell.name}.old-{os.getpid()}")  # `repair` restores it after a kill here
                os.replace(cell, old)
            os.replace(tmp, cell)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def read_per_user(cell: Path) -> pd.DataFrame:
        return pd.read_csv(cell / "per_user.csv.gz", dtype={"user": str, "target": str})

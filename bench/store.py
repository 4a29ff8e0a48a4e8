"""The run store: one folder per (suite, dataset, model variant, seed), written atomically.

results/runs/<suite>/<dataset>/<variant>/seed<N>/
    run.json        resolved config + its hash, commit, versions, command, times, machine, data stats
    metrics.json    mean of each per-user metric
    per_user.csv.gz user, target, above, ties (every metric at any K follows from these two numbers)
    curves.csv      training curves, when the model logs any
A cell folder appears only complete (written beside it, then renamed), so a killed suite resumes
cleanly: a cell whose stored config hash matches is skipped.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.evaluate import Ranks


def config_hash(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def per_user_csv(user_ids: np.ndarray, targets: np.ndarray, ranks: Ranks) -> bytes:
    df = pd.DataFrame({"user": user_ids, "target": targets, "above": ranks.above, "ties": ranks.ties})
    buf = io.BytesIO()
    # mtime=0: the same run gives the same bytes, so committed results diff cleanly.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(df.to_csv(index=False).encode())
    return buf.getvalue()


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def cell_dir(self, suite: str, dataset: str, variant: str, seed: int) -> Path:
        return self.root / "runs" / suite / dataset / variant / f"seed{seed}"

    def cache_dir(self, suite: str, dataset: str, variant: str, seed: int) -> Path:
        return self.root / "cache" / suite / dataset / variant / f"seed{seed}"

    @staticmethod
    def record(cell: Path) -> dict | None:
        try:
            return json.loads((cell / "run.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self, cell: Path, chash: str) -> bool:
        rec = self.record(cell)
        return rec is not None and rec.get("config_hash") == chash and (cell / "per_user.csv.gz").exists()

    @staticmethod
    def write_cell(cell: Path, files: dict[str, bytes | str]) -> None:
        """Write all files into a sibling temp folder, then swap it in with renames."""
        cell.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cell.parent, prefix=f".{cell.name}.tmp-"))
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data.encode() if isinstance(data, str) else data)
            old = None
            if cell.exists():
                old = cell.with_name(f".{cell.name}.old-{os.getpid()}")
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

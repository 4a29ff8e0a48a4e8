"""RecBole atomic files (`<name>.inter`, `<name>.item`): tab-separated, header `field:type`."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from bench.datasets.base import Interactions, file_fingerprint
from bench.errors import BenchError


def read_atomic(path: Path) -> pd.DataFrame:
    """Read one atomic file; columns are renamed to the bare field names (type suffix dropped)."""
    if not path.is_file():
        raise BenchError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise BenchError(f"{path}: the file is empty (expected a 'field:type' header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: not a tab-separated atomic file ({str(e).splitlines()[0]})") from None
    for col in df.columns:
        if ":" not in col:
            raise BenchError(f"{path}: header field {col!r} lacks its ':type' suffix (line 1)")
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def _require(df: pd.DataFrame, path: Path, cols: list[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise BenchError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})")


def interactions_from_atomic(
    name: str,
    inter_path: Path,
    item_path: Path | None,
    text_fields: dict[str, str],
    version: str,
    preprocessing: str = "all interactions kept as implicit feedback",
) -> Interactions:
    """`text_fields` maps our display name (e.g. "Title") to the atomic column it comes from."""
    inter = read_atomic(inter_path)
    _require(inter, inter_path, ["user_id", "item_id", "timestamp"])
    if inter.empty:
        raise BenchError(f"{inter_path}: no interactions")
    try:
        ts = inter["timestamp"].astype(np.float64).to_numpy()
    except ValueError:
        bad = int(np.flatnonzero(pd.to_numeric(inter["timestamp"], errors="coerce").isna())[0])
        raise BenchError(f"{inter_path}: line {bad + 2}: timestamp {inter['timestamp'][bad]!r} is not a number") from None
    if not np.isfinite(ts).all():
        bad = int(np.flatnonzero(~np.isfinite(ts))[0])
        raise BenchError(f"{inter_path}: line {bad + 2}: timestamp {inter['timestamp'][bad]!r} is not finite")
    for col in ("user_id", "item_id"):
        empty = np.flatnonzero(inter[col].str.strip() == "")
        if len(empty):
            raise BenchError(f"{inter_path}: line {int(empty[0]) + 2}: empty {col}")
    # Exact duplicate rows (same user, item and timestamp) are dropped and counted: kept, the test
    # target would also be a history item, masked away, and every metric would silently be 0.
    dup = inter.duplicated(subset=["user_id", "item_id", "timestamp"]).to_numpy()
    if dup.any():
        inter, ts = inter[~dup].reset_index(drop=True), ts[~dup]
        preprocessing += f"; {int(dup.sum())} exact duplicate rows (user, item, timestamp) dropped"
    item_text: dict[str, dict[str, str]] = {}
    paths = [inter_path]
    if item_path is not None:
        items = read_atomic(item_path)
        _require(items, item_path, ["item_id", *text_fields.values()])
        paths.append(item_path)
        cols = {display: items[col].to_numpy() for display, col in text_fields.items()}
        for row, iid in enumerate(items["item_id"].to_numpy()):
            item_text[iid] = {display: str(cols[display][row]) for display in text_fields}
    fp = file_fingerprint(*paths)
    return Interactions(
        name=name,
        version=f"{version} sha1:{fp}",
        user=inter["user_id"].to_numpy(dtype=str),
        item=inter["item_id"].to_numpy(dtype=str),
        timestamp=ts,
        item_text=item_text,
        preprocessing=preprocessing,
    )


def load_atomic_dir(directory: str) -> Interactions:
    """`atomic:<dir>`: the `.inter` file (and `.item` if present) of a RecBole dataset folder."""
    d = Path(directory)
    inters = sorted(d.glob("*.inter")) if d.is_dir() else []
    if len(inters) != 1:
        raise BenchError(f"{d}: expected exactly one <name>.inter file in this directory, found {len(inters)}")
    item_path = inters[0].with_suffix(".item")
    fields: dict[str, str] = {}
    if item_path.exists():
        header = [c.split(":", 1)[0] for c in item_path.open(encoding="utf-8").readline().rstrip("\n").split("\t")]
        fields = {c.replace("_", " ").title(): c for c in header if c != "item_id"}
    return interactions_from_atomic(
        f"atomic:{d.name}", inters[0], item_path if item_path.exists() else None, fields, version=f"atomic {d.name}"
    )

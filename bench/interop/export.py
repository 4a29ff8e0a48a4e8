"""`bench export`: the exact split a suite scores on, for another toolkit to train on.

Written under the folder the user names (nothing elsewhere), with raw dataset ids:
- RecBole benchmark files `<dataset>.{train,valid,test}.inter` (user_id, item_id_list, item_id: one
  train row per prefix, as our RecBole adapter feeds RecBole) and `<dataset>.item` (the item texts);
- plain CSV: train.csv (user, item, position in time order), valid.csv and test.csv (user, item),
  test_users.csv and valid_users.csv (whom the suite evaluates and selects on), items.csv;
- manifest.json: suite, dataset version, counts, and the `bench score` command that scores
  predictions made on it.

The files are written into a hidden sibling folder and renamed into place whole, so the folder either
holds a whole export or does not exist; of two exports into one new folder the second is refused.
RecBole's atomic files separate a sequence's ids with spaces: where an item id holds whitespace they
are left out (the CSV files quote it) and the manifest says why.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.errors import BenchError


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _token(text: str) -> str:
    return " ".join(str(text).split())  # atomic files are tab-separated, one row per line


def export_split(suite, dataset: str, out: Path) -> list[Path]:
    from bench.execute.runner import get_split, sample_users

    entry = next((d for d in suite.datasets if d.key == dataset), None)
    if entry is None:
        raise BenchError(f"suite {suite.name}: no dataset {dataset!r} (has {', '.join(d.key for d in suite.datasets)})")
    out = Path(out)
    _check_target(out)
    split = get_split(entry)
    uid, iid = [str(u) for u in split.user_ids], [str(i) for i in split.item_ids]
    test_users = sample_users(split.n_users, suite.user_sample)
    valid_users = sample_users(split.n_users, suite.valid_sample)
    fields = list(split.item_text[0]) if split.item_text else []
    files: dict[str, str] = {}

    unreadable = _unreadable_by_recbole(uid, iid)
    if unreadable is None:  # RecBole's files only where its tab- and space-separated rows can hold every id
        head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
        seq = lambda items: " ".join(iid[i] for i in items)  # noqa: E731
        files[f"{dataset}.train.inter"] = head + "".join(
            f"{uid[u]}\t{seq(s[:t])}\t{iid[s[t]]}\n" for u, s in enumerate(split.train) for t in range(1, len(s)))
        files[f"{dataset}.valid.inter"] = head + "".join(
            f"{uid[u]}\t{seq(split.train[u])}\t{iid[split.valid[u]]}\n" for u in range(split.n_users))
        files[f"{dataset}.test.inter"] = head + "".join(
            f"{uid[u]}\t{seq([*split.train[u], split.valid[u]])}\t{iid[split.test[u]]}\n" for u in range(split.n_users))
        files[f"{dataset}.item"] = "\t".join(["item_id:token", *(f"{f.lower().replace(' ', '_')}:token_seq" for f in fields)]) + "\n" + "".join(
            "\t".join([iid[i], *(_token(split.item_text[i][f]) for f in fields)]) + "\n" for i in range(split.n_items))
    files["train.csv"] = _csv(["user", "item", "position"],
                              ((uid[u], iid[x], p) for u, s in enumerate(split.train) for p, x in enumerate(s)))
    files["valid.csv"] = _csv(["user", "item"], ((uid[u], iid[split.valid[u]]) for u in range(split.n_users)))
    files["test.csv"] = _csv(["user", "item"], ((uid[u], iid[split.test[u]]) for u in range(split.n_users)))
    files["test_users.csv"] = _csv(["user"], ([uid[u]] for u in test_users))
    files["valid_users.csv"] = _csv(["user"], ([uid[u]] for u in valid_users))
    files["items.csv"] = _csv(["item", *fields], ([iid[i], *(split.item_text[i][f] for f in fields)] for i in range(split.n_items)))

    manifest = {
        "suite": suite.name, "dataset": dataset, "version": split.version, "stats": split.stats(),
        "test_users": int(len(test_users)), "valid_users": int(len(valid_users)),
        "history_masking": suite.history_masking,
        "protocol": "leave-one-out by time: test = last item, valid = second-to-last, train = the rest; "
                    "predict for test users from train + valid; full ranking over all items",
        "files": sorted(files) + ["manifest.json"],
        **({"recbole_files": f"left out: the id {unreadable!r} holds whitespace, which RecBole's tab- and space-separated "
                             "rows cannot hold; the CSV files have every id"} if unreadable is not None else {}),
        "score": f"python -m bench score --suite {suite.name} --dataset {dataset} --name MODEL --predictions FILE",
    }
    files["manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    _write_whole(out, files)
    return [out / name for name in files]


def _unreadable_by_recbole(uid: list[str], iid: list[str]) -> str | None:
    """The first id that RecBole's tab-separated rows (users) or space-separated sequences (items) would split."""
    for i in iid:
        if len(i.split()) != 1 or i != i.strip():
            return i
    return next((u for u in uid if not u or any(c in u for c in "\t\n\r")), None)


def _check_target(out: Path) -> None:
    if out.is_symlink() and not out.exists():
        raise BenchError(f"{out}: a symbolic link to a missing path; name a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError(f"{out}: exists and is not an empty folder; name a new one")
    parent = out.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise BenchError(f"{out}: its parent {parent} {what}; name a folder inside an existing one")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BenchError(f"{out}: cannot write into {parent} (permission denied)")


def _write_whole(out: Path, files: dict[str, str]) -> None:
    """Every file into a hidden sibling folder, then one rename: readers never see half an export."""
    parent = out.absolute().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise BenchError(f"{out}: cannot write into {parent} ({e.strerror})") from None
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        try:
            os.rename(tmp, out)  # replaces a missing or empty folder, atomically; never a full one
        except OSError:
            raise BenchError(f"{out}: another export filled it meanwhile; name a new folder") from None
        tmp = None
    except OSError as e:
        raise BenchError(f"{out}: could not write the export ({e.strerror}); nothing was left there") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

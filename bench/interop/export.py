"""`bench export`: the exact split a suite scores on, for another toolkit to train on.

Written under the folder the user names (nothing elsewhere), with raw dataset ids:
- RecBole benchmark files `<dataset>.{train,valid,test}.inter` (user_id, item_id_list, item_id: one
  train row per prefix, as our RecBole adapter feeds RecBole) and `<dataset>.item` (the item texts);
- plain CSV: train.csv (user, item, position in time order), valid.csv and test.csv (user, item),
  test_users.csv and valid_users.csv (whom the suite evaluates and selects on), items.csv;
- manifest.json last (its presence says the export is whole): suite, dataset version, counts, and
  the `bench score` command that scores predictions made on it.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from bench.errors import BenchError
from bench.execute.store import atomic_write_text


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
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError(f"{out}: exists and is not an empty folder; name a new one")
    split = get_split(entry)
    uid, iid = [str(u) for u in split.user_ids], [str(i) for i in split.item_ids]
    test_users = sample_users(split.n_users, suite.user_sample)
    valid_users = sample_users(split.n_users, suite.valid_sample)
    fields = list(split.item_text[0]) if split.item_text else []
    files: dict[str, str] = {}

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
        "files": sorted(files),
        "score": f"python -m bench score --suite {suite.name} --dataset {dataset} --name MODEL --predictions FILE",
    }
    written = []
    for name, text in files.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return written + [out / "manifest.json"]

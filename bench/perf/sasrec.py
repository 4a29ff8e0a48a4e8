"""Our all-position SASRec vs RecBole's SASRec, same split, same seeds, same early-stopping rule.

    python -m bench.perf.sasrec [--dataset ml-100k] [--seeds 0,1,2] [--patience 5]
                                [--ours '{"batch_size": 16}'] [--skip-recbole] [--out FILE.jsonl]

Prints, per seed, wall time per epoch and to convergence (best validation epoch + patience) for
each, and the validation NDCG@10 each reached (both measured by our evaluator on all users,
history masked); then means over seeds, the speed ratio (over runs with equal thread counts) and a
paired t-test on the NDCG gap.
With `--out` every finished run is appended to a JSON-lines file and skipped when the command is
run again, so an interrupted benchmark resumes (RecBole takes ~45 min per seed on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from baselines.neural import EarlyStopping
from bench.models import FitContext, make_model
from bench.execute.runner import get_split, git_commit
from bench.execute.scoring import validation_ndcg10
from bench.execute.store import atomic_write_text
from bench.suites.load import DatasetEntry

# Our SASRec as the `full` suite runs it on ML-100k: RecBole's layer layout, heads and dropout; 51-item
# windows every 25 items, so each target is trained once with >= 26 items before it; lr 2e-3 with the
# weights' moving average validated and kept (results/perf/sasrec_screening.jsonl).
# RecBole's with its own defaults (batch 256, lr 1e-3).
OURS = {"max_len": 50, "epochs": 300, "batch_size": 16, "all_windows": True, "layout": "recbole", "heads": 2,
        "dropout": 0.5, "attn_dropout": 0.5, "stride": 25, "lr": 2e-3, "ema": 0.999}
RECBOLE = {"model": "SASRec", "max_len": 50, "batch_size": 256, "lr": 1e-3, "epochs": 60}


def run(name: str, params: dict, split, seed: int, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(name, {**params, "threads": threads})
        ctx = FitContext(seed=seed, workdir=Path(tmp), valid_users=np.arange(split.n_users))
        t = time.perf_counter()
        model.fit(split, ctx)
        total = time.perf_counter() - t
        ndcg = validation_ndcg10(model, split, np.arange(split.n_users))
    epochs = len(ctx.curves)  # both log one row per epoch
    return {"seconds": round(total, 2), "epochs": epochs, "epoch_seconds": round(total / max(1, epochs), 3),
            "best_epoch": model.info().get("best_epoch"), "valid_NDCG@10": ndcg, "curve": ctx.curves}


def load_rows(path: Path | None) -> list[dict]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def describe(label: str, r: dict) -> str:
    return (f"{label:<8} seed {r['seed']}: {r['epoch_seconds']:.1f} s/epoch, {r['epochs']} epochs (best {r['best_epoch']}), "
            f"{r['seconds']:.0f} s, valid NDCG@10 {r['valid_NDCG@10']:.4f}")


def replay(row: dict, patience: int) -> dict:
    """The same run as if stopped with another patience: the logged curve is replayed (training up
    to the stop is identical); time pro rata of the epochs run."""
    stopping, stop = EarlyStopping(patience), row["epochs"]
    for point in row["curve"]:
        if point.get("valid_NDCG@10") is None:
            continue
        stopping.improved(point["valid_NDCG@10"])
        if stopping.stop:
            stop = point["epoch"]
            break
    return {**row, "epochs": stop, "seconds": row["seconds"] * stop / row["epochs"], "valid_NDCG@10": stopping.best}


def compare(ours: list[dict], rb: list[dict], what: str) -> None:
    """Quality over all paired seeds; speed only over seeds whose runs used the same thread count
    (RecBole's extra seeds may have run one thread each, side by side, to save hours)."""
    timed = [(o, r) for o, r in zip(ours, rb) if o["machine"]["threads"] == r["machine"]["threads"]]
    if timed:
        to, tr = [o for o, _ in timed], [r for _, r in timed]
        per_epoch = np.mean([r["epoch_seconds"] for r in tr]) / np.mean([r["epoch_seconds"] for r in to])
        s_ours, s_rb = np.mean([r["seconds"] for r in to]), np.mean([r["seconds"] for r in tr])
        speed = (f"per epoch {per_epoch:.1f}x faster, to convergence {s_rb / s_ours:.1f}x faster "
                 f"({s_ours:.0f} s vs {s_rb:.0f} s; timed seeds {[o['seed'] for o in to]})")
    else:
        speed = "no RecBole run with our thread count to time against"
    a, b = np.array([r["valid_NDCG@10"] for r in ours]), np.array([r["valid_NDCG@10"] for r in rb])
    test = f", paired t-test p = {stats.ttest_rel(a, b).pvalue:.2f}" if len(a) > 1 else ""
    print(f"{what}: {speed}; validation NDCG@10 ours - RecBole {np.mean(a - b):+.4f} "
          f"(per seed {', '.join(f'{g:+.4f}' for g in a - b)}){test}")


def summarize(rows: list[dict]) -> None:
    by = {label: {r["seed"]: r for r in rows if r["label"] == label} for label in ("ours", "recbole")}
    for label, runs in by.items():
        if runs:
            nd = np.array([r["valid_NDCG@10"] for r in runs.values()])
            print(f"{label:<8} over seeds {sorted(runs)}: {np.mean([r['epoch_seconds'] for r in runs.values()]):.1f} s/epoch, "
                  f"{np.mean([r['seconds'] for r in runs.values()]):.0f} s to convergence, "
                  f"valid NDCG@10 {nd.mean():.4f} ± {nd.std(ddof=1) if len(nd) > 1 else 0:.4f} "
                  f"(threads per run: {sorted({r['machine']['threads'] for r in runs.values()})})")
    seeds = sorted(set(by["ours"]) & set(by["recbole"]))
    if not seeds:
        return
    ours, rb = [by["ours"][s] for s in seeds], [by["recbole"][s] for s in seeds]
    compare(ours, rb, f"ours vs RecBole on seeds {seeds}")
    p_ours, p_rb = ours[0]["params"]["patience"], rb[0]["params"]["patience"]
    if p_ours > p_rb:  # the same stopping rule for both, replayed from our longer runs
        compare([replay(r, p_rb) for r in ours], rb, f"ours stopped with RecBole's patience {p_rb}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--patience", type=int, default=5, help="evaluations without gain before stopping (both)")
    ap.add_argument("--ours", type=json.loads, default={}, help=f"override our SASRec's parameters {OURS} (JSON)")
    ap.add_argument("--recbole", type=json.loads, default={}, help=f"override RecBole's parameters {RECBOLE} (JSON)")
    ap.add_argument("--skip-recbole", action="store_true", help="only ours (to choose its settings)")
    ap.add_argument("--skip-ours", action="store_true", help="only RecBole (e.g. its seeds in separate processes)")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: all cores)")
    ap.add_argument("--out", type=Path, help="JSON-lines file of finished runs: appended to, and reused when rerun")
    args = ap.parse_args()
    split = get_split(DatasetEntry(args.dataset, args.dataset, {}))
    rows = load_rows(args.out)
    machine = {"threads": args.threads or os.cpu_count(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "commit": git_commit()}
    todo = [] if args.skip_ours else [("ours", "sasrec", {**OURS, "patience": args.patience, **args.ours})]
    if not args.skip_recbole:
        todo.append(("recbole", "recbole", {**RECBOLE, "patience": args.patience, **args.recbole}))
    print(f"{args.dataset}, {machine}")
    for label, name, params in todo:
        print(f"{label:<8} {name} {params}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for label, name, params in todo:
            key = {"label": label, "dataset": args.dataset, "params": params, "seed": seed}
            done = [r for r in rows if all(r.get(k) == v for k, v in key.items())]
            if done:
                print(describe(label, done[-1]) + " (from " + str(args.out) + ")", flush=True)
                continue
            row = {**key, **run(name, params, split, seed, args.threads), "machine": machine}
            rows.append(row)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(args.out, "".join(json.dumps(r) + "\n" for r in rows))
            print(describe(label, row), flush=True)
    summarize([r for r in rows if r["dataset"] == args.dataset and r["params"] in [p for _, _, p in todo]])


if __name__ == "__main__":
    main()

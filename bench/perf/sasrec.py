"""Our all-position SASRec vs RecBole's SASRec, same split, same run, same early-stopping rule.

    python -m bench.perf.sasrec [--dataset ml-100k] [--recbole-epochs 60] [--patience 5]
                                [--batch-sizes 32,128] [--lr 1e-3] [--ours '{"dropout": 0.5}'] [--skip-recbole]

Prints wall time per epoch and to convergence (best validation epoch + patience) for each, and
the validation NDCG@10 each reached (both measured by our evaluator on all users, history masked).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.models import FitContext, make_model
from bench.runner import get_split, validation_ndcg10
from bench.suites import DatasetEntry


def run(name: str, params: dict, split, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(name, params)
        ctx = FitContext(seed=seed, workdir=Path(tmp), valid_users=np.arange(split.n_users))
        t = time.perf_counter()
        model.fit(split, ctx)
        total = time.perf_counter() - t
        ndcg = validation_ndcg10(model, split, np.arange(split.n_users))
    epochs = len(ctx.curves)  # both log one row per epoch
    return {"seconds": total, "valid_NDCG@10": ndcg, "epochs": epochs, "epoch_seconds": total / max(1, epochs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--recbole-epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--batch-sizes", default="32,128", help="our SASRec's batch sizes to time (RecBole keeps 256)")
    ap.add_argument("--lr", type=float, default=1e-3, help="our SASRec's learning rate")
    ap.add_argument("--ours", type=json.loads, default={}, help="more parameters of our SASRec, as JSON")
    ap.add_argument("--skip-recbole", action="store_true", help="only ours (to choose its settings)")
    args = ap.parse_args()
    split = get_split(DatasetEntry(args.dataset, args.dataset, {}))
    ours = {}
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        ours[bs] = r = run("sasrec", {"max_len": 200, "epochs": 300, "patience": args.patience, "batch_size": bs,
                                      "lr": args.lr, **args.ours}, split)
        extra = "".join(f", {k} {v}" for k, v in args.ours.items())
        print(f"ours    SASRec (batch {bs}, lr {args.lr:g}{extra}): {r['epoch_seconds']:.1f} s/epoch, {r['epochs']} epochs, "
              f"{r['seconds']:.0f} s total, valid NDCG@10 {r['valid_NDCG@10']:.4f}", flush=True)
    if args.skip_recbole:
        return
    rb_params = {"model": "SASRec", "max_len": 50, "batch_size": 256, "lr": 1e-3, "epochs": args.recbole_epochs,
                 "patience": args.patience}
    rb = run("recbole", rb_params, split)
    print(f"RecBole SASRec (batch {rb_params['batch_size']}, lr {rb_params['lr']:g}, max_len 50): {rb['epoch_seconds']:.1f} s/epoch, {rb['epochs']} epochs "
          f"(cap {args.recbole_epochs}, {'capped' if rb['epochs'] >= args.recbole_epochs else 'converged'}), "
          f"{rb['seconds']:.0f} s total, valid NDCG@10 {rb['valid_NDCG@10']:.4f}", flush=True)
    for bs, r in ours.items():
        print(f"ours at batch {bs} vs RecBole: per epoch {rb['epoch_seconds'] / r['epoch_seconds']:.1f}x faster, "
              f"to convergence {rb['seconds'] / r['seconds']:.1f}x faster, "
              f"validation NDCG@10 ours - RecBole {r['valid_NDCG@10'] - rb['valid_NDCG@10']:+.4f}")


if __name__ == "__main__":
    main()

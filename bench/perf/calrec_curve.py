"""Validation NLL against training minutes for choices of CALRec's CPU recipe,
on this machine, with the bundled SmolLM2-135M on ML-100k.

    python -m bench.perf.calrec_curve --steps 120 --eval-every 40 --set lr=3.0e-4 --set lr=1.0e-3

Each `--set k=v[,k=v]` is one configuration: the `quick` suite's CPU recipe (its `calrec` row) with
those parameters changed (values read as YAML). Every configuration trains from the same seed on
the same validation users; printed and appended to results/perf/calrec_curves.jsonl: tokens/s, the
validation per-item NLL at each evaluation with the training minutes so far (beside popularity's
and a uniform guess's cross-entropy on the same targets), the in-batch user-to-item loss (L_UT) on
validation targets beside chance, and the dense towers' validation Recall@10 and NDCG@10. Weights
are cached in a temporary folder, never in results/.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.models import FitContext, make_model
from bench.precision import autocast
from bench.execute.runner import get_split, git_commit, machine, sample_users, seed_everything, versions
from bench.suites.load import load_suite
from bench.execute.store import atomic_write_text
from calrec.towers import calrec_loss, collate


def parse_set(text: str) -> dict:
    out = {}
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


@torch.no_grad()
def valid_l_ut(model, split, users: np.ndarray, batch: int = 8) -> dict:
    """The user-to-item in-batch loss (L_UT, plain softmax: no logQ term, so every choice is measured
    alike) on validation targets in batches of `batch` users, beside chance (ln batch)."""
    w = replace(model._loss_weights(), nig=0.0, tt=0.0)
    losses = []
    for s in range(0, len(users) - batch + 1, batch):
        chunk = users[s : s + batch]
        prompts = [model.builder.user_prompt(split.train[u], target=int(split.valid[u])) for u in chunk]
        b = collate(prompts, [model.builder.item_ids(int(split.valid[u])) for u in chunk], [int(split.valid[u]) for u in chunk],
                    model.tok.pad_token_id).to(model.device)
        with autocast(model.bf16, model.device):
            losses.append(float(calrec_loss(model.model, model.head, b, w)[1]["ut"]))
    return {"valid_L_UT": round(float(np.mean(losses)), 4), "chance_L_UT": round(float(np.log(batch)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--eval-every", type=int, default=40)
    ap.add_argument("--set", action="append", default=[], dest="sets", help="k=v[,k=v]: one configuration")
    ap.add_argument("--out", default="results/perf/calrec_curves.jsonl")
    ap.add_argument("--no-towers", action="store_true", help="skip validation L_UT (about a minute each)")
    args = ap.parse_args()
    commit = git_commit()  # the code this process imports now, not what the checkout holds when it ends
    suite = load_suite("quick")
    variant, dataset = suite.variant("calrec"), suite.datasets[0]
    split = get_split(dataset)
    valid_users = sample_users(split.n_users, suite.valid_sample)
    for change in args.sets or [""]:
        params = {**variant.params_for(dataset.key), "stage2_steps": args.steps, "eval_every": args.eval_every,
                  **parse_set(change)}
        with tempfile.TemporaryDirectory() as tmp:
            ctx = FitContext(seed=0, workdir=Path(tmp), valid_users=valid_users, ks=suite.ks,
                             extra={"shared_cache": Path(tmp) / "shared"})
            model = make_model("calrec", params)
            seed_everything(0)
            t0 = time.perf_counter()
            model.fit(split, ctx)
            wall = time.perf_counter() - t0
            # The dense towers' validation Recall/NDCG@10 come from fit's own final validation.
            towers = {} if args.no_towers else {
                **valid_l_ut(model, split, valid_users[: params.get("valid_users", 200)]),
                **{k: round(v, 4) for k, v in model.measured.items() if k.startswith("valid_dense_")}}
        evals = [r for r in ctx.curves if r.get("valid_nll") is not None]
        last = [r["loss_ut"] for r in ctx.curves[-20:] if "loss_ut" in r]
        timing = model.timings.get("stage2", {})
        record = {
            "change": change or "(recipe)", "params": params, "steps": args.steps,
            "tokens_per_s": timing.get("tokens_per_s"), "fit_minutes": round(wall / 60, 2),
            "curve": [{"step": r["step"], "train_minutes": round(r["train_seconds"] / 60, 2), "valid_nll": r["valid_nll"]}
                      for r in evals],
            "popularity_nll": evals[-1]["popularity_nll"] if evals else None,
            "uniform_nll": evals[-1]["uniform_nll"] if evals else None,
            "train_loss_ut_last20": round(float(np.mean(last)), 4) if last else None, **towers,
            "commit": commit, "machine": machine(), "versions": versions(),
            "command": "python -m bench.perf.calrec_curve " + shlex.join(sys.argv[1:]),
        }
        curve = "  ".join(f"{c['train_minutes']:.1f} min: {c['valid_nll']:.3f}" for c in record["curve"])
        print(f"{record['change']:32s} {record['tokens_per_s'] or 0:5.0f} tok/s  NLL {curve}  "
              f"(popularity {record['popularity_nll']}, uniform {record['uniform_nll']})  "
              + (f"valid L_UT {towers['valid_L_UT']} (chance {towers['chance_L_UT']})  dense valid Recall@10 "
                 f"{towers.get('valid_dense_Recall@10')} NDCG@10 {towers.get('valid_dense_NDCG@10')}" if towers else ""), flush=True)
        out = Path(args.out)
        before = out.read_text(encoding="utf-8") if out.exists() else ""
        atomic_write_text(out, before + json.dumps(record, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

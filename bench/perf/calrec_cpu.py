"""CALRec's CPU recipe against the one it replaces, on this machine, with the bundled SmolLM2-135M
and real ML-100k windows (the CPU recipe's speed targets: >= 10 passes over ML-100k per CPU hour, whole-
catalog ranking >= 1 user/s).

    python -m bench.perf.calrec_cpu [--steps 6] [--users 32] [--recipes old,new] [--out FILE]

Per recipe, in the same run:
  train   tokens/s of full optimiser steps (user + item tower, forward + backward + AdamW) and
          passes over ML-100k's training windows per CPU hour; with the frozen cache, also the
          one-time cost of computing it (measured on a slice of the windows, scaled) and the passes
          in the first hour, that cost included
  rank    test users/s: the old recipe's likelihood over a pool (QRR 30 + dense 50 + popularity
          50, its three retrieval passes included) and the new one's whole-catalog trie scores
The first training step warms up and is not counted (the first three with `compile`).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.models import make_model
from bench.precision import autocast, native_bf16
from bench.execute.runner import get_split, machine
from bench.execute.store import atomic_write_text
from bench.suites.load import DatasetEntry
from calrec.backbone import compile_layers
from calrec.frozen import FrozenStates, compute_states
from calrec.train import Domain, Examples, epoch_positions, step_gradients

RECIPES = {
    "old": {"template": "compact", "item_fields": ["Title", "Year"], "nig_targets": "all", "vocab": "trie",
            "train_layers": 8, "examples": "epochs", "batch_size": 8, "user_pooling": "next", "max_history": 20,
            "inference": "likelihood", "candidates": {"qrr": 30, "dense": 50, "popularity": 50}, "n_samples": 10},
    "new": {"template": "compact", "item_fields": ["Title"], "nig_targets": "all", "vocab": "trie",
            "train_layers": 4, "frozen_cache": True, "examples": "epochs", "batch_size": 16, "user_pooling": "next",
            "max_history": 20, "nig_per": "item", "inference": "likelihood", "candidates": "all"},
}
RECIPES["compiled"] = {**RECIPES["new"], "compile": True}  # the new recipe with its trained layers compiled


def prepared(params: dict, split):
    """A CALRec model with its backbone, prompt builder and trie set up as `fit` does, untrained."""
    m = make_model("calrec", {**params, "stage2_steps": 0})
    m.setup(split, seed=0)
    return m


def training_speed(m, split, steps: int, cache_windows: int) -> dict:
    """Tokens/s of optimiser steps over a seeded slice of the epoch's windows, and what it means for
    a whole pass; with frozen_cache, the slice's cache is computed and timed first."""
    cfg = m._stage_config(steps)
    positions = epoch_positions(split.train, cfg, m.builder.max_history + 1)
    prompts = [m.builder.user_prompt(split.train[u][:t], target=int(split.train[u][t])) for u, t in positions]
    epoch_tokens = sum(len(p.ids) + len(m.builder.item_ids(p.item_ids[-1])) for p in prompts)
    some = np.random.default_rng(0).choice(len(positions), size=min(cache_windows, len(positions)), replace=False)
    out = {"windows": len(positions), "epoch_tokens": epoch_tokens}
    domain = Domain(split.dataset, split, m.builder, 0)
    if m.cfg.training.frozen_cache:
        top, pad = m.cfg.training.train_layers, m.tok.pad_token_id
        t0 = time.perf_counter()
        windows = compute_states(m.model, [prompts[k].ids for k in some], top, pad, m.bf16, m.device, "cache")
        slice_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        items = compute_states(m.model, [m.builder.item_ids(i) for i in range(split.n_items)], top, pad, m.bf16, m.device,
                               "cache: items")
        out["cache_seconds"] = slice_s * len(positions) / len(some) + time.perf_counter() - t0
        domain = replace(domain, frozen=(FrozenStates([prompts[k] for k in some], windows, items, top),))
    s = Examples(domain, cfg, np.random.default_rng(0))
    s.tilings = [positions[some]]  # draw the measured slice only (its window k is the cache's row k)
    params = [p for p in m.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    tokens, seconds = 0, 0.0
    m.model.train()
    if cfg.compile:
        compile_layers(m.model)
    warm = 3 if cfg.compile else 1  # steps not counted: allocator, kernels (and compilation)
    for step in range(steps + warm):
        rows = s.draw(cfg.batch_size)
        t = time.perf_counter()
        step_gradients(m.model, None, s, rows, cfg, m._loss_weights(), m.tok.pad_token_id, params)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= warm:
            seconds += time.perf_counter() - t
            tokens += sum(len(e[0].ids) + len(e[1]) for e in rows)
    m.model.eval()
    out["tokens_per_s"] = tokens / seconds
    out["passes_per_hour"] = 3600 * out["tokens_per_s"] / epoch_tokens
    if "cache_seconds" in out:
        out["passes_first_hour"] = max(0.0, 3600 - out["cache_seconds"]) * out["tokens_per_s"] / epoch_tokens
    return out


def ranking_speed(m, split, users: int) -> float:
    histories = split.inputs("test", np.arange(users))
    m.predict(histories[:2], np.arange(2))  # warm-up (the bf16 copy, the trie scorer, item vectors)
    t = time.perf_counter()
    with autocast(False, m.device):
        m.predict(histories, np.arange(users))
    return users / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--cache-windows", type=int, default=256)
    ap.add_argument("--recipes", default="old,new")
    ap.add_argument("--out", default="", help="append the numbers as one JSON line to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    split = get_split(DatasetEntry("ml-100k", "ml-100k", {}))
    print(f"ML-100k, SmolLM2-135M, {torch.get_num_threads()} threads, bf16 {'on' if native_bf16() else 'off'}; "
          f"{machine().get('cpu_model', '')}")
    rows = {}
    for name in args.recipes.split(","):
        m = prepared(RECIPES[name], split)
        tr = training_speed(m, split, args.steps, args.cache_windows)
        ups = ranking_speed(m, split, args.users)
        rows[name] = {**tr, "rank_users_per_s": ups}
        cache = (f", cache {tr['cache_seconds'] / 60:.1f} min once: {tr['passes_first_hour']:.1f} passes in the first hour"
                 if "cache_seconds" in tr else "")
        print(f"{name:4s} train {tr['tokens_per_s']:7.0f} tokens/s = {tr['passes_per_hour']:5.1f} passes/hour "
              f"({tr['windows']} windows, {tr['epoch_tokens']} tokens){cache}; rank {ups:.2f} users/s", flush=True)
    if "old" in rows and "new" in rows:
        o, n = rows["old"], rows["new"]
        print(f"new / old: training passes per hour x{n['passes_per_hour'] / o['passes_per_hour']:.1f}, "
              f"ranking users/s x{n['rank_users_per_s'] / o['rank_users_per_s']:.1f} "
              f"(targets: >= 10 passes/hour, >= 1 user/s)")
    if args.out:
        path = Path(args.out)
        old = path.read_text() if path.exists() else ""
        line = json.dumps({"machine": machine(), "args": vars(args), "recipes": {k: RECIPES[k] for k in rows}, "rows": rows})
        atomic_write_text(path, old + line + "\n")


if __name__ == "__main__":
    main()

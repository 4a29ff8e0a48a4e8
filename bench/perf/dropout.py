"""Dropout masks: torch's CPU dropout vs `FastDropout`, on the tensors of one SASRec training step
on ML-100k (batch 16 pieces of 51 items, hidden 64, 2 heads).

    python -m bench.perf.dropout [--threads 2] [--repeats 200]

Prints microseconds per call and the ratio for the residual-branch shape and the attention-weight
shape, then the rate each drops at (both must drop ~p).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from baselines.dropout import FastDropout


def per_call_us(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--p", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fast = FastDropout(args.p)
    print(f"torch {torch.__version__}, {args.threads} threads, p = {args.p}")
    for name, shape in (("residual (16, 51, 64)", (16, 51, 64)), ("attention (16, 2, 51, 51)", (16, 2, 51, 51))):
        x = torch.randn(shape, requires_grad=True)
        slow_us = per_call_us(lambda: F.dropout(x, args.p, True), args.repeats)
        fast_us = per_call_us(lambda: fast(x), args.repeats)
        rates = [(F.dropout(x, args.p, True) == 0).float().mean().item(), (fast(x) == 0).float().mean().item()]
        print(f"{name:<26} torch {slow_us:7.0f} us, FastDropout {fast_us:6.0f} us: {slow_us / fast_us:.1f}x faster; "
              f"dropped {rates[0]:.4f} vs {rates[1]:.4f}")


if __name__ == "__main__":
    main()

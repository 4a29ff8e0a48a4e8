"""Data-parallel CALRec over torch.distributed: every rank draws the same global batch of a step
and computes its own rows; the contrastive losses see the rows of every rank (the in-batch
negatives are the global batch); gradients are summed across ranks before the optimiser step.

Why not DistributedDataParallel: one step runs the shared LLM twice (user tower, item tower) before
one backward, and the gathered negatives carry gradient back to the rank that computed them;
DDP's reducer expects one forward per backward. The losses here are already normalised by the
global step (tokens, rows), so summing gradients gives exactly the single-process gradient.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from bench.execute.distributed import world


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order (every rank holds the same number of rows). Gradients
    flow back to the rank that computed each row."""
    size = world()[1]
    if size == 1:
        return x
    if x.requires_grad:
        return torch.cat(dist_fn.all_gather(x))
    out = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def sum_across_ranks(x: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """All-reduce (sum) every gradient, flattened into one message per dtype."""
    if world()[1] == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        if p.grad is None:  # a parameter this rank's rows did not reach still takes the others' gradient
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat)
        at = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[at : at + n].view_as(p.grad))
            at += n

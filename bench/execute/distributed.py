"""One harness run across several processes (`torchrun --nproc_per_node N -m bench run ...`):
every rank walks the same cells in the same order, rank 0 decides whether a cell runs and is the
only one that writes; a model that trains data-parallel (CALRec) shares each step across ranks.

With no launcher (WORLD_SIZE unset or 1) every function here is a no-op, so the single-process
path stays exactly as it is.
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta

from bench.errors import BenchError


def _group():
    """torch.distributed if a process group is up, else None (torch is not imported for the answer:
    cheap models run without it)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    dist = _group()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def is_main() -> bool:
    return world()[0] == 0


def init_from_env() -> int:
    """Joins the process group a launcher describes in the environment (torchrun, accelerate
    launch); NCCL with one GPU per local rank where there are GPUs, else gloo. Returns the world size."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return size
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return size
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" then means this rank's GPU
    # A whole cell (fit + scoring) can pass between two collectives of the same rank: long timeout.
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(hours=12))
    return size


def shutdown() -> None:
    """Leaves the process group, once every rank is done: a gloo group left to interpreter exit can
    abort the process (SIGABRT) while its worker threads still hold Python objects (pytorch#179291)."""
    if dist := _group():
        dist.barrier()
        dist.destroy_process_group()


def agree(value):
    """Rank 0's value on every rank (a decision all ranks must follow the same way)."""
    if world()[1] == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value) -> list:
    """Every rank's value, in rank order, on every rank."""
    if world()[1] == 1:
        return [value]
    import torch.distributed as dist

    out = [None] * world()[1]
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def check_models(models: dict[str, object]) -> None:
    """Under a multi-process launch only models that train data-parallel may run: any other
    would be fitted once per rank for nothing, or leave the other ranks waiting."""
    if world()[1] == 1:
        return
    bad = sorted(name for name, m in models.items() if not getattr(m, "data_parallel", False))
    if bad:
        raise BenchError(f"a {world()[1]}-process launch runs only data-parallel models (CALRec); "
                         f"select them with --models (not: {', '.join(bad)})")

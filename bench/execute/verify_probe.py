"""What a model computes, for `bench refingerprint --verify`: run as a script inside a checkout (the
current one, or a worktree at the commit a cell recorded), it fits each job's model on a small
synthetic dataset and writes a digest of what it predicted and of its training curve's numbers.

    python verify_probe.py JOBS.json OUT.json

It reads only long-standing APIs (`bench.datasets.load_dataset`, `bench.split.leave_one_out`,
`bench.models.make_model`, `FitContext`), so the same file runs at older commits. Each job runs on
one thread from the same seeds, so two trees that compute alike give identical bytes.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

SYNTHETIC = {"n_users": 48, "n_items": 36, "seed": 7}
TIMING = ("second", "minute", "per_s", "time", "wall")  # curve entries that measure the machine, not the model


def digest(prediction, curves: list[dict]) -> str:
    h = hashlib.sha256()
    if isinstance(prediction, np.ndarray):
        h.update(str(prediction.dtype).encode() + str(prediction.shape).encode())
        h.update(np.ascontiguousarray(prediction).tobytes())
    else:
        for row in prediction:
            h.update(np.asarray(row, dtype=np.int64).tobytes() + b"|")
    numbers = [{k: v for k, v in row.items() if isinstance(v, (int, float)) and not any(t in k for t in TIMING)}
               for row in curves]
    h.update(json.dumps(numbers, sort_keys=True).encode())
    return h.hexdigest()


def split_for(job: dict, split):
    """The shared small split, or for a RecBole job one whose longest history fills its `max_len`:
    RecBole sizes a model's position table by the longest sequence it was given, and our adapter
    once padded to `max_len` regardless (an IndexError on the small split, so no check could run)."""
    if job["model"] != "recbole":
        return split
    from bench.datasets import load_dataset
    from bench.split import leave_one_out

    longest = int(job["params"].get("max_len", 50)) + 3
    # a history never repeats an item, so the catalog must outnumber the longest one
    return leave_one_out(load_dataset("synthetic", **{**SYNTHETIC, "n_items": longest + 20, "max_len": longest,
                                                      "min_len": longest - 5}))


def run_job(job: dict, split) -> dict:
    import torch

    from bench.models import FitContext, make_model

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    users = np.arange(split.n_users)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(job["model"], job["params"])
        ctx = FitContext(seed=0, workdir=Path(tmp), valid_users=users, ks=(10,),
                         extra={"shared_cache": Path(tmp) / "shared", "history_masking": True})
        model.fit(split, ctx)
        prediction = model.predict(split.inputs("test", users), users)
    return {"digest": digest(prediction, ctx.curves)}


def main(jobs_file: str, out_file: str) -> None:
    import torch

    from bench.datasets import load_dataset
    from bench.split import leave_one_out

    torch.set_num_threads(1)
    jobs = json.loads(Path(jobs_file).read_text())
    split = leave_one_out(load_dataset("synthetic", **SYNTHETIC))
    out = {}
    for key, job in jobs.items():
        try:
            out[key] = run_job(job, split_for(job, split))
        except Exception as e:  # noqa: BLE001 - an error is an outcome: that job cannot vouch for its cells
            out[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
    Path(out_file).write_text(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Resident memory of CALRec's training steps on the CPU: the heap glibc keeps against the heap
handed back after every step (`calrec.train.return_freed_memory`, which training calls).

    python -m bench.perf.calrec_memory --suite ablation --row calrec-paper-sitting --steps 12

Each mode trains the row's stage II (stage I dropped) on the suite's first dataset for `--steps`
optimiser steps from the same seed, in a process of its own (resident memory is a process's):
`kept` with the per-step trim turned off, `trimmed` as training runs. Printed per step, for both:
the resident memory after the step and the peak so far; then their ratios at the last step.
Appended to results/perf/calrec_memory.jsonl with the command, commit and machine. Weights are
kept in a temporary folder, never in results/.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

from bench.execute.provenance import peak_rss_mb, resident_mb
from bench.execute.runner import git_commit, machine, versions
from bench.execute.store import atomic_write_text
from bench.perf.calrec_curve import parse_set

MODES = ("kept", "trimmed")
MARK = "calrec_memory: "  # the child's result line on stdout (progress bars go to stderr)


def child(args) -> None:
    """One mode's steps: (resident after the step, peak so far) for each, as one line on stdout."""
    import numpy as np

    import calrec.train as train
    from bench.execute.runner import get_split, seed_everything
    from bench.models import FitContext, make_model
    from bench.suites.load import load_suite

    suite = load_suite(args.suite)
    variant, dataset = suite.variant(args.row), suite.datasets[0]
    params = {**variant.params_for(dataset.key), "stage1": None, "stage2_steps": args.steps, "eval_every": 0,
              **parse_set(args.set)}
    trim, steps = train.return_freed_memory, []

    def after_step(device: str) -> None:
        if args.child == "trimmed":
            trim(device)
        steps.append((resident_mb(), peak_rss_mb()))

    train.return_freed_memory = after_step
    split = get_split(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        seed_everything(0)
        make_model(variant.model, params).fit(split, FitContext(
            seed=0, workdir=Path(tmp), valid_users=np.arange(min(8, split.n_users)), ks=suite.ks,
            extra={"shared_cache": Path(tmp) / "shared"}))
    print(MARK + json.dumps({"mode": args.child, "params": params, "steps": steps}), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="ablation", help="a suite's name or YAML file")
    ap.add_argument("--row", default="calrec-paper-sitting", help="a CALRec row of that suite")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--set", default="", help="k=v[,k=v]: the row's parameters changed")
    ap.add_argument("--out", default="results/perf/calrec_memory.jsonl")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, not {args.steps}")
    if args.child:
        return child(args)
    argv = sys.argv[1:] if argv is None else argv
    runs = {}
    for mode in MODES:
        done = subprocess.run([sys.executable, "-m", "bench.perf.calrec_memory", *argv, "--child", mode],
                              stdout=subprocess.PIPE, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
        if done.returncode or not lines:
            raise SystemExit(f"calrec_memory: the {mode} run ended with exit code {done.returncode} and no result")
        runs[mode] = json.loads(lines[-1][len(MARK):])
    kept, trimmed = runs["kept"]["steps"], runs["trimmed"]["steps"]
    rows = [[k + 1, *kept[k], *trimmed[k]] for k in range(min(len(kept), len(trimmed)))]
    print(tabulate(rows, headers=["step", "kept: after (MiB)", "kept: peak", "trimmed: after", "trimmed: peak"],
                   tablefmt="pipe"))
    print(f"{machine().get('cpu_model', '')}: at step {len(rows)} trimmed / kept: after the step "
          f"x{trimmed[-1][0] / kept[-1][0]:.2f}, peak x{trimmed[-1][1] / kept[-1][1]:.2f}")
    record = {"suite": args.suite, "row": args.row, "params": runs["kept"]["params"], "runs": runs,
              "commit": git_commit(), "machine": machine(), "versions": versions(),
              "command": "python -m bench.perf.calrec_memory " + shlex.join(argv)}
    out = Path(args.out)
    before = out.read_text(encoding="utf-8") if out.exists() else ""
    atomic_write_text(out, before + json.dumps(record, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

"""python -m bench {list,plan,run,tune,table,plot,check,headline,memorise,export,score,refingerprint}."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.cli.commands import (RESULTS, cmd_check, cmd_export, cmd_headline, cmd_list, cmd_memorise, cmd_plan, cmd_plot,
                            cmd_refingerprint, cmd_run, cmd_score, cmd_table, cmd_tune)
from bench.errors import BenchError
from bench.suites.schema import SEED_MAX


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _ints(value: str) -> list[int]:
    try:
        out = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if any(not 0 <= s <= SEED_MAX for s in out):
        raise argparse.ArgumentTypeError(f"seeds must be between 0 and {SEED_MAX}, got {value!r}")
    return out


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: the repo's results/)")
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="datasets, models and suites", parents=[common]).set_defaults(func=cmd_list)
    r = sub.add_parser("run", parents=[common], help="run every (dataset, model variant, seed) cell of a suite")
    r.add_argument("--suite", required=True)
    r.add_argument("--models", type=_csv, help="only these model variants (comma-separated)")
    r.add_argument("--datasets", type=_csv, help="only these datasets")
    r.add_argument("--seeds", type=_ints, help="only these seeds")
    r.add_argument("--force", action="store_true", help="rerun cells even if stored with the same config")
    r.add_argument("--stale", action="store_true",
                   help="also rerun cells computed by code that has changed since (or that recorded no code fingerprint)")
    r.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                   help="end a cell that computes longer than this (one line; the suite goes on); default: the suite's "
                        "cell_timeout, else none")
    r.add_argument("--yes", action="store_true",
                   help="start without asking even where `bench plan` estimates more than an hour of computing")
    r.add_argument("--track", metavar="mlflow[:URI]",
                   help="log each cell as an MLflow run (default store: results/mlflow/; needs the .[track] extra)")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="run cells here one by one (default) or as tasks on a Ray cluster (needs the .[ray] extra)")
    r.add_argument("--address", help="the Ray cluster to join (default: start a local one)")
    r.add_argument("--cpus-per-cell", type=float, default=1, help="cores a CPU cell asks Ray for (default 1)")
    r.set_defaults(func=cmd_run)
    tu = sub.add_parser("tune", parents=[common], help="search a variant's `tune:` space on validation data (Optuna)")
    tu.add_argument("--suite", required=True)
    tu.add_argument("--model", required=True, help="the model variant whose `tune:` space to search")
    tu.add_argument("--dataset", required=True)
    tu.add_argument("--trials", type=int, default=20, help="finished (complete or pruned) trials the study should hold")
    tu.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tu.add_argument("--metric", default="NDCG@10", help="the validation metric to maximise")
    tu.add_argument("--storage", help="an Optuna storage URL (default: SQLite under results/tune/<suite>/)")
    tu.add_argument("--track", metavar="mlflow[:URI]", help="log each trial as an MLflow run")
    tu.set_defaults(func=cmd_tune)
    t = sub.add_parser("table", parents=[common], help="build markdown and LaTeX tables from stored runs")
    t.add_argument("--suite", required=True)
    t.add_argument("--format", choices=["markdown", "latex"], default="markdown", help="which one to print")
    t.add_argument("--test", choices=["t-test", "permutation", "wilcoxon"], default="t-test")
    t.add_argument("--family", choices=["column", "table"], default="column",
                   help="Holm's correction within each metric column (default) or over every test of a table")
    t.add_argument("--ci", action="store_true", help="write the tables with 95%% bootstrap intervals over users (files *-ci)")
    t.set_defaults(func=cmd_table)
    pn = sub.add_parser("plan", parents=[common], help="every cell's state, device and estimated time, before running")
    pn.add_argument("--suite", required=True)
    pn.add_argument("--gpu", action="store_true",
                    help="estimate as if on a machine with a GPU (from the stored GPU runs): the time to ask for")
    pn.add_argument("--hours", type=float,
                    help="also say which cells left fit in this many hours here, as `bench run` commands (lower seeds first)")
    pn.set_defaults(func=cmd_plan)
    pl = sub.add_parser("plot", parents=[common], help="metric@K curves, ablation bars with CIs, training curves")
    pl.add_argument("--suite", required=True)
    pl.set_defaults(func=cmd_plot)
    c = sub.add_parser("check", parents=[common], help="rerun a suite and compare with the committed reference")
    c.add_argument("--suite", default="smoke")
    c.add_argument("--update", action="store_true", help="write the reference from this run instead of comparing")
    c.add_argument("--tables", type=_csv, default=[], help="also rebuild these suites' committed tables and compare")
    c.add_argument("--readme", type=Path, help="also compare this README's generated blocks (headline and findings tables) with the stored runs")
    c.set_defaults(func=cmd_check)
    me = sub.add_parser("memorise", parents=[common], help="how much of each catalog the suite's untuned LLMs reproduce")
    me.add_argument("--suite", required=True)
    me.set_defaults(func=cmd_memorise)
    h = sub.add_parser("headline", parents=[common], help="rewrite the README's headline and findings tables from the stored runs")
    h.add_argument("--readme", type=Path,
                   help="the README to rewrite (default: this checkout's, and only from its own results/)")
    h.set_defaults(func=cmd_headline)
    ex = sub.add_parser("export", help="write a suite's split (RecBole atomic files and CSV) for another toolkit")
    ex.add_argument("--suite", required=True)
    ex.add_argument("--dataset", required=True)
    ex.add_argument("--out", type=Path, required=True, help="a new (or empty) folder; nothing is written elsewhere")
    ex.set_defaults(func=cmd_export)
    sc = sub.add_parser("score", parents=[common], help="score another toolkit's predictions and store them as a cell")
    sc.add_argument("--suite", required=True)
    sc.add_argument("--dataset", required=True)
    sc.add_argument("--name", required=True, help="the model variant's name in tables (a new one)")
    sc.add_argument("--predictions", type=Path, required=True,
                    help="CSV or Parquet: user,item,score or user,rank,item or user,items (raw ids, as bench export writes)")
    sc.add_argument("--label", help="the row label in tables (default: --name)")
    sc.add_argument("--declared", default="", help="what to record about the model (toolkit, settings), stored in run.json")
    sc.add_argument("--compare-with", type=Path,
                    help="a results folder whose runs the tables put beside this one (read, never written); default: "
                         "this checkout's results/ when --results is another folder")
    sc.set_defaults(func=cmd_score)
    f = sub.add_parser("refingerprint", parents=[common],
                       help="rewrite the code records of cells whose code is unchanged in today's fingerprint scheme, with per-file hashes")
    f.add_argument("--verify", action="store_true",
                   help="also rewrite stale cells where a check shows today's code computes what their commit computed "
                        "(each row's model, made tiny, fitted on synthetic data at the recorded commit and now: identical "
                        "predictions and curves); the others stay stale, each with why. CALRec's cached stage weights that a "
                        "verified cell trained or read move to today's key with it, so rows sharing them do not retrain")
    f.set_defaults(func=cmd_refingerprint)
    return p


# Commands that write under --results (the others only read it).
WRITERS = ("run", "tune", "table", "plot", "refingerprint", "memorise", "score")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if hasattr(args, "results"):
            from bench.execute.store import check_results_folder

            check_results_folder(args.results, write=args.command in WRITERS or getattr(args, "update", False))
        return args.func(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output left (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 1
    except KeyboardInterrupt:
        kept = {"run": "finished cells are stored", "tune": "the study keeps its finished trials"}.get(
            args.command, "nothing half-written was kept")
        print(f"interrupted: {kept}; rerun the same command to resume", file=sys.stderr)
        return 130

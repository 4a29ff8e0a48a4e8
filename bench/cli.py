"""python -m bench {list,plan,run,tune,table,plot,check,headline,memorise,export,score,refingerprint}."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.schema import SEED_MAX

RESULTS = Path(__file__).resolve().parent.parent / "results"


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


def cmd_list(args) -> int:
    from bench.datasets import DATASETS, FAMILIES
    from bench.models import MODELS
    from bench.suites import available_suites, load_suite

    print("datasets:", ", ".join([*DATASETS, *(f"{f}:<arg>" for f in FAMILIES)]))
    print("models:  ", ", ".join(sorted(MODELS)))
    print("suites:")
    for name in available_suites():
        s = load_suite(name)
        print(f"  {name:8s} {len(s.datasets)} dataset(s) x {len(s.variants)} variant(s) x {len(s.seeds)} seed(s)  {s.description}")
    return 0


def cmd_run(args) -> int:
    from bench.execute.distributed import init_from_env, shutdown

    ranks = init_from_env()  # torchrun / accelerate launch: data-parallel CALRec
    code = _run(args, ranks)
    shutdown()  # not after an error: the other ranks may be inside another collective
    return code


def _run(args, ranks: int) -> int:
    from bench.execute.distributed import is_main
    from bench.execute.executors import run_suite
    from bench.suites import load_suite
    from bench.report.tables import suite_tables

    suite = load_suite(args.suite, args.results)
    tracker = make_tracker(args.track, args.results, suite.name) if is_main() else None
    done = run_suite(suite, args.results, args.models, args.datasets, args.seeds, args.force, args.stale,
                     on_cell=tracker.log_cell if tracker else None, executor=args.executor, address=args.address, cpus_per_cell=args.cpus_per_cell)
    if not is_main():
        return 0  # rank 0 wrote the cells and writes the tables
    if ranks > 1:
        print(f"ran data-parallel on {ranks} processes")
    written = write_tables(suite, args.results, suite_tables(suite, args.results))
    print(f"runs in {args.results / 'runs' / suite.name}; tables: {', '.join(str(p) for p in written if p.suffix == '.md')}")
    failed = [f"{cell.name} ({status})" for cell, status in done if status.startswith("failed")]
    if failed:
        print(f"error: {len(failed)} cell(s) failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def make_tracker(track: str | None, results: Path, experiment: str | None = None):
    if not track:
        return None
    from bench.execute.track import tracker

    return tracker(track, results, experiment)


def cmd_tune(args) -> int:
    from bench.suites import load_suite
    from bench.execute.tune import Search, run_search
    from bench.execute.tune_report import write_overlay, write_report

    if args.trials < 1:
        raise BenchError(f"--trials {args.trials}: must be at least 1")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise BenchError(f"--timeout {args.timeout}: must be a number of seconds > 0 (leave it out for no limit)")
    search = Search(load_suite(args.suite, args.results), args.model, args.dataset, args.metric, args.storage)
    tracker = make_tracker(args.track, args.results, f"tune/{search.suite.name}/{search.study_name}")
    callbacks = [tracker.trial_callback(search)] if tracker else []
    study = run_search(search, args.results, args.trials, args.timeout, callbacks)
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise BenchError(f"study {search.study_name}: no trial completed, so there is nothing to write")
    overlay = write_overlay(search, study, args.results)
    report = write_report(search, study, args.results)
    best = study.best_trial
    print(f"best trial {best.number}: valid {args.metric} = {best.value:.4f} with {best.params}")
    print(f"variant {args.model}-tuned written to {overlay}; report: {', '.join(str(p) for p in report)}")
    print(f"next: python -m bench run --suite {args.suite} --models {args.model}-tuned --datasets {args.dataset}")
    return 0


def write_tables(suite, results: Path, files: dict[str, str]) -> list[Path]:
    from bench.execute.store import atomic_write_text

    out = []
    for name, text in files.items():
        path = results / "tables" / suite.name / name
        atomic_write_text(path, text)
        out.append(path)
    return out


def cmd_table(args) -> int:
    from bench.suites import load_suite
    from bench.report.tables import render_tables

    suite = load_suite(args.suite, args.results)
    files = render_tables(suite, args.results, args.test, ci=args.ci, plain=not args.ci, family=args.family)
    write_tables(suite, args.results, files)
    suffix = {"markdown": ".md", "latex": ".tex"}[args.format]
    for name, text in files.items():
        if name.endswith(suffix):
            print(text)
    return 0


def cmd_plan(args) -> int:
    from bench.execute.plan import plan_markdown
    from bench.suites import load_suite

    if args.hours is not None and not args.hours > 0:
        raise BenchError(f"--hours {args.hours:g}: give the hours a sitting has, a positive number")
    run = f"python -m bench run --suite {shlex.quote(args.suite)}" + (
        f" --results {shlex.quote(str(args.results))}" if args.results != RESULTS else "")
    print(plan_markdown(load_suite(args.suite, args.results), args.results, args.gpu, args.hours, run))
    return 0


def cmd_plot(args) -> int:
    from bench.report.plots import plot_suite
    from bench.suites import load_suite

    suite = load_suite(args.suite, args.results)
    written = plot_suite(suite, args.results)
    if not written:
        raise BenchError(f"no stored runs of suite {suite.name} under {args.results / 'runs'}: nothing to plot "
                         f"(python -m bench run --suite {args.suite} first)")
    for p in written:
        print(p)
    return 0


def cmd_check(args) -> int:
    from bench.report.check import check_reference, check_tables

    failures = check_reference(args.suite, args.results, update=args.update)
    if args.update:
        print(f"reference written: {args.results / 'reference' / (args.suite + '.json')}")
    for name in args.tables:
        failures += check_tables(name, args.results)
    if args.readme is not None:
        from bench.report.headline import check_readme

        failures += check_readme(args.readme, args.results)
    for f in failures:
        print(f"REGRESSION {f}")
    print(f"check: {'FAILED, ' + str(len(failures)) + ' problem(s)' if failures else 'ok'}")
    return 1 if failures else 0


def cmd_memorise(args) -> int:
    from bench.report.memorisation import memorise
    from bench.suites import load_suite

    written = memorise(load_suite(args.suite, args.results), args.results)
    print("\n".join(str(p) for p in written) or "every (backbone, dataset) of the suite is measured already")
    return 0


def cmd_headline(args) -> int:
    from bench.report.headline import write_readme

    write_readme(args.readme, args.results)
    print(f"{args.readme}: headline table rewritten from {args.results / 'runs'}")
    return 0


def cmd_export(args) -> int:
    from bench.export import export_split
    from bench.suites import load_suite

    written = export_split(load_suite(args.suite), args.dataset, args.out)
    print(f"{len(written)} files in {args.out} (manifest.json says what each holds)")
    return 0


def cmd_score(args) -> int:
    from bench.execute.executors import run_suite
    from bench.score import register_predictions
    from bench.suites import load_suite
    from bench.report.tables import suite_tables

    overlay = register_predictions(args.suite, args.dataset, args.name, args.predictions, args.results,
                                   args.label, args.declared)
    suite = load_suite(args.suite, args.results)
    done = run_suite(suite, args.results, [args.name], [args.dataset], [0])
    written = write_tables(suite, args.results, suite_tables(suite, args.results))
    print(f"{args.name} registered in {overlay}; tables: {', '.join(str(p) for p in written if p.suffix == '.md')}")
    return 1 if any(status.startswith("failed") for _, status in done) else 0


def cmd_refingerprint(args) -> int:
    from bench.execute.fingerprint import SCHEME, refingerprint

    outcome = refingerprint(args.results)
    for name in outcome["locked"]:
        print(f"{name}: skipped, a run holds its lock")
    print(f"code records in scheme {SCHEME}: " + ", ".join(f"{len(v)} {k}" for k, v in outcome.items()))
    return 0


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
    c.add_argument("--readme", type=Path, help="also compare this README's headline table with the stored runs")
    c.set_defaults(func=cmd_check)
    me = sub.add_parser("memorise", parents=[common], help="how much of each catalog the suite's untuned LLMs reproduce")
    me.add_argument("--suite", required=True)
    me.set_defaults(func=cmd_memorise)
    h = sub.add_parser("headline", parents=[common], help="rewrite the README's headline table from the stored runs")
    h.add_argument("--readme", type=Path, default=RESULTS.parent / "README.md")
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
    sc.set_defaults(func=cmd_score)
    f = sub.add_parser("refingerprint", parents=[common],
                       help="rewrite the code records of cells whose code is unchanged in today's fingerprint scheme, with per-file hashes")
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
    except KeyboardInterrupt:
        kept = {"run": "finished cells are stored", "tune": "the study keeps its finished trials"}.get(
            args.command, "nothing half-written was kept")
        print(f"interrupted: {kept}; rerun the same command to resume", file=sys.stderr)
        return 130

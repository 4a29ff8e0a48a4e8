"""What each `python -m bench` subcommand does, given its parsed arguments (bench/cli/__init__.py parses them
and turns a BenchError into one line and exit code 2). Imports are inside each command so that
`python -m bench list` does not load torch."""
from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

from bench.errors import BenchError

RESULTS = Path(__file__).resolve().parents[2] / "results"


def cmd_list(args) -> int:
    from bench.datasets import DATASETS, FAMILIES
    from bench.models import MODELS
    from bench.suites.load import available_suites, load_suite

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
    from bench.suites.load import load_suite
    from bench.report.tables import suite_tables

    suite = load_suite(args.suite, args.results)
    estimates = None
    if ranks == 1:  # under torchrun the launch itself was the decision (and ranks must not wait on a prompt)
        from bench.execute.guard import confirm_long_run

        estimates = confirm_long_run(suite, args.results, args.models, args.datasets, args.seeds, args.force,
                                     args.stale, getattr(args, "yes", False))
    tracker = make_tracker(args.track, args.results, suite.name) if is_main() else None
    timeout = getattr(args, "cell_timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise BenchError(f"--cell-timeout {timeout}: give the seconds a cell may take, a positive number")
    done = run_suite(suite, args.results, args.models, args.datasets, args.seeds, args.force, args.stale,
                     on_cell=tracker.log_cell if tracker else None, executor=args.executor, address=args.address,
                     cpus_per_cell=args.cpus_per_cell, cell_timeout=timeout or suite.cell_timeout, estimates=estimates)
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
    from bench.suites.load import load_suite
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
    from bench.suites.load import load_suite
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
    from bench.suites.load import load_suite

    if args.hours is not None and not args.hours > 0:
        raise BenchError(f"--hours {args.hours:g}: give the hours a sitting has, a positive number")
    run = f"python -m bench run --suite {shlex.quote(args.suite)}" + (
        f" --results {shlex.quote(str(args.results))}" if args.results != RESULTS else "")
    print(plan_markdown(load_suite(args.suite, args.results), args.results, args.gpu, args.hours, run))
    return 0


def cmd_plot(args) -> int:
    from bench.report.plots import plot_suite, stale_plots
    from bench.suites.load import load_suite

    suite = load_suite(args.suite, args.results)
    written = plot_suite(suite, args.results)
    if not written:
        raise BenchError(f"no stored runs of suite {suite.name} under {args.results / 'runs'}: nothing to plot "
                         f"(python -m bench run --suite {args.suite} first)")
    for p in written:
        print(p)
    for p in stale_plots(suite, args.results / "plots" / suite.name, written):
        p.unlink()
        print(f"removed {p} (not drawn from the stored runs any more)")
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
    from bench.suites.load import load_suite

    written = memorise(load_suite(args.suite, args.results), args.results)
    print("\n".join(str(p) for p in written) or "every (backbone, dataset) of the suite is measured already")
    return 0


def cmd_headline(args) -> int:
    from bench.report.headline import write_readme

    readme = args.readme
    if readme is None:
        if args.results.resolve() != RESULTS.resolve():  # the checkout's README reads the committed results only
            raise BenchError(f"--results {args.results} is not this checkout's results folder: name the README to "
                             f"rewrite with --readme (this checkout's README is generated from {RESULTS})")
        readme = RESULTS.parent / "README.md"
    runs = args.results / "runs"
    if not runs.is_dir() or not any(runs.iterdir()):
        raise BenchError(f"{runs}: no stored runs, so the tables would be empty; {readme} is left as it is")
    write_readme(readme, args.results)
    print(f"{readme}: headline and findings tables rewritten from {runs}")
    return 0


def cmd_export(args) -> int:
    from bench.interop.export import export_split
    from bench.suites.load import load_suite

    written = export_split(load_suite(args.suite), args.dataset, args.out)
    print(f"{len(written)} files in {args.out} (manifest.json says what each holds)")
    return 0


def cmd_score(args) -> int:
    from bench.execute.executors import run_suite
    from bench.interop.score import register_predictions
    from bench.suites.load import load_suite
    from bench.report.tables import suite_tables

    overlay = register_predictions(args.suite, args.dataset, args.name, args.predictions, args.results,
                                   args.label, args.declared)
    suite = load_suite(args.suite, args.results)
    done = run_suite(suite, args.results, [args.name], [args.dataset], [0])
    compare = args.compare_with
    if compare is None and args.results.resolve() != RESULTS.resolve():
        compare = RESULTS  # a results folder of one's own is compared with the committed runs, not copied over
    also = () if compare is None or compare.resolve() == args.results.resolve() else (compare,)
    written = write_tables(suite, args.results, suite_tables(suite, args.results, also))
    print(f"{args.name} registered in {overlay}; tables: {', '.join(str(p) for p in written if p.suffix == '.md')}"
          + (f" (beside the runs in {also[0]})" if also else ""))
    return 1 if any(status.startswith("failed") for _, status in done) else 0


def cmd_refingerprint(args) -> int:
    from bench.execute.fingerprint import SCHEME, refingerprint

    outcome = refingerprint(args.results)
    for name in outcome["locked"]:
        print(f"{name}: skipped, a run holds its lock")
    print(f"code records in scheme {SCHEME}: " + ", ".join(f"{len(v)} {k}" for k, v in outcome.items()))
    if getattr(args, "verify", False):
        from bench.execute.verify import refingerprint_verified

        report = refingerprint_verified(args.results)
        for line in report["still stale"]:
            print(f"still stale: {line}")
        print(f"verified: {len(report['verified'])} cell(s) rewritten to today's code, "
              f"{len(report['still stale'])} still stale")
        from bench.execute.verify_carry import carry_verified_weights

        carried = carry_verified_weights(args.results)
        print(f"cached weights carried to today's code: {len(carried)} entr{'y' if len(carried) == 1 else 'ies'}")
    return 0

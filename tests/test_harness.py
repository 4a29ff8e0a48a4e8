"""Suites, run store, CLI and the regression check, on tiny synthetic suites written to tmp_path."""
import json
import os
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.execute.store import RunStore
from bench.suites.load import load_suite

SUITE = """
description: tiny
seeds: [0, 1]
ks: [1, 5, 10]
user_sample: {size: 40, seed: 0}
datasets:
  syn: {spec: synthetic, n_users: 60, n_items: 50, seed: 1}
models:
  pop: {model: pop}
  random: {model: random}
  knn: {model: itemknn, params: {neighbours: 10}, group: ours}
reference: pop
ablations:
  knn-vs-random: [random, knn]
"""


@pytest.fixture
def suite_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(SUITE)
    return p


def run(*args) -> int:
    return main(list(args))


def test_run_is_resumable_and_tables_are_written(suite_file, tmp_path, capsys):
    res = tmp_path / "res"
    assert run("run", "--suite", str(suite_file), "--results", str(res)) == 0
    cell = res / "runs/tiny/syn/knn/seed1"
    rec = json.loads((cell / "run.json").read_text())
    assert {"config", "config_hash", "commit", "command", "versions", "fit_seconds", "dataset_stats"} <= rec.keys()
    assert rec["evaluated_users"] == 40
    mtime = os.stat(cell / "run.json").st_mtime_ns
    capsys.readouterr()
    assert run("run", "--suite", str(suite_file), "--results", str(res)) == 0
    assert "cached" in capsys.readouterr().out
    assert os.stat(cell / "run.json").st_mtime_ns == mtime  # skipped, not rewritten
    md = (res / "tables/tiny/syn-main.md").read_text()
    assert "Improvement (best row of the studied method vs best baseline row)" in md and "Holm" in md and "Seeds: 0, 1" in md
    tex = (res / "tables/tiny/syn-ablation-knn-vs-random.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\scriptsize $\pm$" in tex
    assert " ±" in md  # two seeds: the spread over seeds is shown
    cost = (res / "tables/tiny/syn-cost.md").read_text().splitlines()
    knn_row = next(line for line in cost if line.startswith("| knn "))
    assert "| 0, 1 " in knn_row and "cores" in knn_row  # one row per variant, its seeds and device
    assert "Peak memory (GB)" in cost[2] and "Peak memory: the highest" in cost[-1]
    peak = max(json.loads((res / f"runs/tiny/syn/knn/seed{s}/run.json").read_text())["memory"]["host_peak_mb"] for s in (0, 1))
    assert f" {peak / 1024:.1f} |" in knn_row
    assert run("plot", "--suite", str(suite_file), "--results", str(res)) == 0
    plots = {p.name for p in (res / "plots/tiny").iterdir()}
    assert {"syn-metric-at-k.png", "syn-ablation-knn-vs-random.png", "syn-ablation-knn-vs-random.pdf"} <= plots


def test_changed_config_reruns_the_cell(suite_file, tmp_path, capsys):
    res = tmp_path / "res"
    run("run", "--suite", str(suite_file), "--results", str(res), "--models", "knn", "--seeds", "0")
    suite_file.write_text(SUITE.replace("neighbours: 10", "neighbours: 20"))
    capsys.readouterr()
    run("run", "--suite", str(suite_file), "--results", str(res), "--models", "knn", "--seeds", "0")
    assert "cached" not in capsys.readouterr().out


def test_interrupted_write_leaves_no_half_cell(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    cell = store.cell_dir("s", "d", "m", 0)
    store.write_cell(cell, {"run.json": "{}", "a": "1"})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", boom)
    with pytest.raises(OSError):
        store.write_cell(cell, {"run.json": "{}", "a": "2"})
    assert (cell / "a").read_text() == "1"  # the old complete cell survives
    assert [p.name for p in cell.parent.iterdir()] == ["seed0"]  # no temp folder left behind


def test_check_passes_then_fails_when_reference_is_edited(suite_file, tmp_path, capsys):
    res = tmp_path / "res"
    assert run("check", "--suite", str(suite_file), "--results", str(res), "--update") == 0
    assert run("check", "--suite", str(suite_file), "--results", str(res)) == 0
    ref = res / "reference/tiny.json"
    data = json.loads(ref.read_text())
    data["syn/knn/seed0"]["NDCG@10"] += 0.01
    ref.write_text(json.dumps(data))
    capsys.readouterr()
    assert run("check", "--suite", str(suite_file), "--results", str(res)) == 1
    out = capsys.readouterr().out
    assert "REGRESSION syn/knn/seed0: NDCG@10" in out and out.count("REGRESSION") == 1


def test_check_tables_detects_edited_table(suite_file, tmp_path, capsys):
    res = tmp_path / "res"
    run("run", "--suite", str(suite_file), "--results", str(res))
    run("check", "--suite", str(suite_file), "--results", str(res), "--update")
    assert run("check", "--suite", str(suite_file), "--results", str(res), "--tables", str(suite_file)) == 0
    t = res / "tables/tiny/syn-main.md"
    t.write_text(t.read_text().replace("0.", "1.", 1))
    capsys.readouterr()
    assert run("check", "--suite", str(suite_file), "--results", str(res), "--tables", str(suite_file)) == 1
    assert "syn-main.md: differs" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("models: {a: {model: pop}}", "suite: missing 'datasets'"),
    ("datasets: {synthetic: {}}\nmodels: {a: {model: pop}}\nbogus: 1", "unknown key 'bogus'"),
    ("datasets: {synthetic: {}}\nmodels: {a: {modle: pop}}", "models.a: unknown key 'modle'"),
    ("datasets: {synthetic: {}}\nmodels: {a: {model: pop}}\nreference: b", "reference 'b'"),
    ("datasets: {synthetic: {}}\nmodels: [a, b", "line 2: not valid YAML"),
    ("datasets: {synthetic: {}}\nmodels: {a: {model: pop}}\nseeds: [x]", "seeds.0: input should be a valid integer"),
])
def test_malformed_suites_give_one_line_errors(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(BenchError, match=message):
        load_suite(str(p))


def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys):
    res = tmp_path / "res"
    assert run("run", "--suite", "nope", "--results", str(res)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown suite 'nope'") and err.count("\n") == 1
    p = tmp_path / "s.yaml"
    p.write_text("datasets: {synthetic: {n_users: 30}}\nmodels: {m: {model: nosuchmodel}}")
    assert run("run", "--suite", str(p), "--results", str(res)) == 2
    assert "unknown model 'nosuchmodel'" in capsys.readouterr().err
    assert not (res / "runs").exists()


def test_list_shows_everything(capsys):
    assert run("list") == 0
    out = capsys.readouterr().out
    assert "ml-1m" in out and "amazon2018:<arg>" in out and "smoke" in out and "pop" in out


def test_run_records_the_commit_it_ran_from(monkeypatch):
    from bench.execute.runner import git_commit, machine

    assert len(git_commit().split("-")[0]) in (40, len("unknown"))
    monkeypatch.setenv("BENCH_COMMIT", "0123abc")  # a tree copied without a usable .git
    assert git_commit() == "0123abc"
    assert "cpus" in machine()


def test_device_and_bf16_settings_are_validated():
    from bench.precision import resolve_bf16, resolve_device

    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="bf16"):
        resolve_bf16("yes")
    assert resolve_bf16(False, "cuda") is False


def test_dirty_flag_ignores_results_but_not_code(tmp_path):
    import subprocess

    from bench.execute.runner import git_commit

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "cell.json").write_text("{}\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "results" / "cell.json").write_text('{"a": 1}\n')
    assert not git_commit(tmp_path).endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path).endswith("-dirty")


def test_training_plots_show_validation_nll_beside_popularity_and_uniform():
    import matplotlib.pyplot as plt
    import pandas as pd

    from bench.report.plots import _validation_axis

    df = pd.DataFrame({"step": [1, 2, 3], "loss_nig": [3.0, 2.0, 1.5], "valid_nll": [None, 7.1, 6.9],
                       "popularity_nll": [None, 6.88, 6.88], "uniform_nll": [None, 7.43, 7.43]})
    fig, ax = plt.subplots()
    _validation_axis(ax, df)
    second = fig.axes[1]
    assert second.get_ylabel() == "validation NLL per item (nats)"
    assert [line.get_label() for line in second.get_lines()] == ["valid NLL per item", "popularity", "uniform"]
    assert list(second.get_lines()[0].get_ydata()) == [7.1, 6.9]
    fig2, ax2 = plt.subplots()
    _validation_axis(ax2, pd.DataFrame({"epoch": [1, 2], "valid_NDCG@10": [0.1, 0.2]}))
    assert fig2.axes[1].get_ylabel() == "validation NDCG@10"
    plt.close("all")


def test_ablation_bars_draw_popularity_and_the_reference_as_lines(suite_file, tmp_path):
    """A bar is read against what a model must beat to recommend at all: popularity (here also the
    suite's reference, drawn once) as a line at its mean over users, labelled with its value."""
    import matplotlib.pyplot as plt

    from bench.report.plots import _baseline_lines
    from bench.report.results import load_runs

    res = tmp_path / "res"
    assert run("run", "--suite", str(suite_file), "--results", str(res)) == 0
    suite = load_suite(str(suite_file))
    runs, _ = load_runs(suite, res, "syn")
    fig, ax = plt.subplots()
    _baseline_lines(ax, suite, runs, ["random", "knn"], "NDCG@10")
    pop = float(runs["pop"].user_metric("NDCG@10", suite.ks).mean())
    assert [line.get_label() for line in ax.get_lines()] == [f"pop {pop:.4f}"]
    assert list(ax.get_lines()[0].get_ydata()) == [pop, pop]
    fig2, ax2 = plt.subplots()
    _baseline_lines(ax2, suite, runs, ["pop", "knn"], "NDCG@10")  # a row of the ablation is not drawn twice
    assert ax2.get_lines() == []
    plt.close("all")


def test_ablation_bars_grey_out_cells_of_older_code(suite_file, tmp_path, monkeypatch):
    """A bar from a cell computed before fingerprints (or by code changed since) is marked, as the
    table notes mark it, instead of passing for a result of today's code."""
    import matplotlib.pyplot as plt

    from bench.report import plots
    from bench.report.results import load_runs

    res = tmp_path / "res"
    assert run("run", "--suite", str(suite_file), "--results", str(res)) == 0
    suite = load_suite(str(suite_file))
    runs, _ = load_runs(suite, res, "syn")
    del runs["knn"].records[1]["code"]  # seed 1 as recorded before fingerprints were
    shown = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: shown.update(
        labels=[t.get_text() for t in fig.axes[0].get_xticklabels()], note=fig.axes[0].get_xlabel()) or [])
    plots.ablation_bars(suite, runs, "syn", "knn-vs-random", ["random", "knn"], res)
    assert shown["labels"] == ["random", "knn †"] and shown["note"].startswith("† grey: computed by older code")
    plt.close("all")


def test_ablation_bars_show_each_seed_as_a_dot(suite_file, tmp_path, monkeypatch):
    """The bar's interval is over users; where seeds differ as much as rows do, each seed's mean is a dot."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection  # scatter's, not the error bars' lines

    from bench.report import plots
    from bench.report.results import load_runs

    res = tmp_path / "res"
    assert run("run", "--suite", str(suite_file), "--results", str(res)) == 0
    suite = load_suite(str(suite_file))
    runs, _ = load_runs(suite, res, "syn")
    runs["knn"].metrics[1] = {**runs["knn"].metrics[1], "NDCG@10": 0.5}  # seeds that differ, as trained models' do
    shown = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: shown.update(
        dots=[c.get_offsets() for c in fig.axes[0].collections if isinstance(c, PathCollection)]) or [])
    plots.ablation_bars(suite, runs, "syn", "knn-vs-random", ["random", "knn"], res)
    by_bar = sorted((round(float(x)), float(y)) for dots in shown["dots"] for x, y in dots)
    assert by_bar == sorted([(0, m["NDCG@10"]) for m in runs["random"].metrics] + [(1, runs["knn"].metrics[0]["NDCG@10"]), (1, 0.5)])
    plt.close("all")

"""Hardening, round two: the newer paths (tune, track, results folders) end with one line
and write nothing outside the folders they were given. Inputs are written by each test."""
import os
import socket
import time

import numpy as np
import pytest

from bench.cli import main
from bench.models import MODELS

optuna = pytest.importorskip("optuna")

SUITE = """
description: hardening
seeds: [0]
ks: [5, 10]
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 2}
models:
  pop: {model: pop}
  failing: {model: failing, params: {width: 3}, tune: {width: {low: 1, high: 4}}}
  stepped: {model: failing, params: {width: 3}, tune: {width: {low: 20, high: 30, step: 0.5}}}
reference: pop
"""


class Failing:
    """A model whose every fit fails with a BenchError (a trial's data problem, say)."""

    def __init__(self, width: int = 3):
        self.width = width

    def fit(self, split, ctx):
        from bench.errors import BenchError

        raise BenchError(f"width {self.width}: no good")

    def predict(self, histories, users):
        return np.zeros((len(histories), 30))


@pytest.fixture
def suite_file(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "failing", "test_hardening2:Failing")
    p = tmp_path / "hard.yaml"
    p.write_text(SUITE)
    return p


def tune(suite_file, res, *extra):
    return main(["tune", "--suite", str(suite_file), "--dataset", "syn", "--results", str(res), *extra])


def test_tune_stops_when_every_trial_fails_with_the_first_error(suite_file, tmp_path, capsys):
    t0 = time.perf_counter()
    assert tune(suite_file, tmp_path / "res", "--model", "failing", "--trials", "20") == 2
    assert time.perf_counter() - t0 < 60
    err = capsys.readouterr().err
    assert "3 trials in a row failed" in err and "trial 0: width" in err and "no good" in err
    assert "Traceback" not in err


def test_a_space_whose_inner_values_do_not_fit_the_model_is_refused_up_front(suite_file, tmp_path, capsys):
    """An integer parameter with step 0.5: both corners are integers, 20.5 is not."""
    assert tune(suite_file, tmp_path / "res", "--model", "stepped") == 2
    err = capsys.readouterr().err.strip()
    assert "parameter 'width' must be int" in err and "20.5" in err and "\n" not in err
    assert not (tmp_path / "res" / "tune").exists()


@pytest.mark.parametrize("flag, value, message", [("--trials", "0", "at least 1"), ("--timeout", "0", "> 0"),
                                                  ("--timeout", "nan", "> 0"), ("--timeout", "-5", "> 0")])
def test_tune_refuses_bad_budgets_before_writing(suite_file, tmp_path, capsys, flag, value, message):
    assert tune(suite_file, tmp_path / "res", "--model", "failing", flag, value) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("content", [os.urandom(4096), b"SQLite format 3\x00" + b"\x00" * 50])
def test_a_damaged_study_database_is_one_line_naming_it(suite_file, tmp_path, capsys, content):
    db = tmp_path / "res/tune/hard/optuna.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(content)
    assert tune(suite_file, tmp_path / "res", "--model", "failing") == 2
    err = capsys.readouterr().err.strip()
    assert str(db) in err and "start a fresh study" in err and "\n" not in err


@pytest.mark.parametrize("storage, message", [("notaurl", "cannot be opened"),
                                              ("sqlite:////nonexistent/folder/x.db", "cannot be opened"),
                                              ("postgresql://u@127.0.0.1:9/db", "")])
def test_bad_storage_urls_are_one_line(suite_file, tmp_path, capsys, storage, message):
    assert tune(suite_file, tmp_path / "res", "--model", "failing", "--storage", storage) == 2
    err = capsys.readouterr().err.strip()
    assert storage.split("@")[-1].split("/")[0] in err or message in err
    assert "\n" not in err and "Traceback" not in err


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_track_probes_an_unreachable_server_before_computing_anything(tmp_path, capsys):
    pytest.importorskip("mlflow")
    t0 = time.perf_counter()
    uri = f"http://127.0.0.1:{_closed_port()}"
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path / "res"), "--track", f"mlflow:{uri}"]) == 2
    assert time.perf_counter() - t0 < 120
    err = capsys.readouterr().err.strip()
    assert uri in err and "cannot be used" in err and "\n" not in err
    assert not (tmp_path / "res" / "runs").exists()  # no cell was computed


def test_track_refuses_what_is_not_a_uri(tmp_path, capsys):
    pytest.importorskip("mlflow")
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path), "--track", "mlflow:notauri"]) == 2
    assert "is not a tracking URI" in capsys.readouterr().err


def test_track_to_a_sqlite_store_keeps_artifacts_beside_it_not_in_the_working_directory(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    db = tmp_path / "store/mlflow.db"
    db.parent.mkdir()
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path / "res"), "--track", f"mlflow:sqlite:///{db}"]) == 0
    assert not list(cwd.iterdir())  # no ./mlruns
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("smoke")
    assert exp.artifact_location.startswith((tmp_path / "store/artifacts").as_uri())
    assert list((tmp_path / "store/artifacts").rglob("run.json"))


@pytest.mark.parametrize("command", [["plan", "--suite", "smoke"], ["table", "--suite", "smoke"], ["plot", "--suite", "smoke"],
                                     ["refingerprint"], ["run", "--suite", "smoke"],
                                     ["tune", "--suite", "smoke", "--model", "pop", "--dataset", "synthetic"]])
def test_a_results_path_that_is_a_file_is_one_line_for_every_command(tmp_path, capsys, command):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main([*command, "--results", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"results folder {f} is a file" in err and "\n" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_results_folder_is_one_line_before_any_work(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for command in (["table", "--suite", "smoke"], ["run", "--suite", "smoke", "--track", "mlflow"]):
            assert main([*command, "--results", str(ro)]) == 2
            assert "is not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_a_results_folder_holding_a_file_named_runs_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").write_text("x")
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path)]) == 2
    assert "runs is a file" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--cpus-per-cell", "-1"], "--cpus-per-cell -1.0: must be a number of cores > 0"),
    (["--cpus-per-cell", "nan"], "must be a number of cores > 0"),
    (["--cpus-per-cell", "64"], "no node offers that many (this machine has"),
    (["--address", "not a host"], "expected HOST:PORT"),
    (["--address", "127.0.0.1:{closed}"], "nothing answers there"),
])
def test_ray_refuses_what_would_wait_for_ever_before_starting_a_cluster(tmp_path, capsys, extra, message):
    pytest.importorskip("ray")
    extra = [e.replace("{closed}", str(_closed_port())) for e in extra]
    t0 = time.perf_counter()
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path), "--executor", "ray", *extra]) == 2
    assert time.perf_counter() - t0 < 60
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


# ---- silent nonsense ----------------------------------------------------

RANGES = """
description: ranges
seeds: [0]
ks: [5, 10]
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 2}
models:
  pop: {model: pop}
  knn: {model: itemknn, params: {PARAMS}}
reference: pop
"""


@pytest.mark.parametrize("params, message", [("neighbours: 0", "'neighbours' should be greater than or equal to 1, not 0"),
                                             ("neighbours: -5", "not -5"), ("shrink: .inf", "'shrink' should be a finite number"),
                                             ("window: 0", "'window' should be greater than or equal to 1")])
def test_out_of_range_model_parameters_are_refused_with_the_plan(tmp_path, capsys, params, message):
    suite = tmp_path / "r.yaml"
    suite.write_text(RANGES.replace("PARAMS", params))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "model variant 'knn'" in err and "\n" not in err
    assert not (tmp_path / "res" / "runs").exists()


def test_a_tune_space_reaching_out_of_range_is_refused_by_run_and_tune(tmp_path, capsys):
    suite = tmp_path / "r.yaml"
    suite.write_text(RANGES.replace("params: {PARAMS}", "params: {neighbours: 5}, tune: {neighbours: {low: -4, high: 20}}"))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "res")]) == 2
    assert "models.knn.tune" in capsys.readouterr().err
    assert main(["tune", "--suite", str(suite), "--model", "knn", "--dataset", "syn", "--results", str(tmp_path / "res")]) == 2
    assert "'neighbours' should be greater than or equal to 1, not -4" in capsys.readouterr().err
    assert not (tmp_path / "res" / "runs").exists() and not (tmp_path / "res" / "tune").exists()


@pytest.mark.parametrize("dataset, message", [("n_items: 4", "need n_items >= 2*n_successors"),
                                              ("seed: -1", "'seed' should be greater than or equal to 0"),
                                              ("n_successors: 0", "'n_successors' should be greater than or equal to 1")])
def test_dataset_parameters_that_fail_only_when_built_are_refused_with_the_plan(tmp_path, capsys, dataset, message):
    suite = tmp_path / "r.yaml"
    suite.write_text(RANGES.replace("n_items: 30, seed: 2}", f"{dataset}}}").replace("  knn: {model: itemknn, params: {PARAMS}}\n", ""))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "res" / "runs").exists()


def test_duplicate_cutoffs_are_refused(tmp_path, capsys):
    suite = tmp_path / "r.yaml"
    suite.write_text(RANGES.replace("ks: [5, 10]", "ks: [10, 10, 5]").replace("params: {PARAMS}", "params: {}"))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "res")]) == 2
    assert "ks: 10 given twice" in capsys.readouterr().err


class NaNScores:
    def fit(self, split, ctx):
        self.n = split.n_items

    def predict(self, histories, users):
        out = np.random.default_rng(0).random((len(histories), self.n))
        out[0, 3] = np.nan
        return out


def test_nan_scores_fail_their_cell_with_one_line_and_the_suite_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(MODELS, "nan", "test_hardening2:NaNScores")
    suite = tmp_path / "r.yaml"
    suite.write_text(RANGES.replace("  knn: {model: itemknn, params: {PARAMS}}", "  nan: {model: nan}\n  random: {model: random}"))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "res")]) == 1
    captured = capsys.readouterr()
    assert "syn/nan/seed0: failed: model 'nan': model returned NaN scores for 1 of" in captured.err + captured.out
    assert "Traceback" not in captured.err
    assert (tmp_path / "res/runs/r/syn/random/seed0/metrics.json").is_file()  # the cell after it ran
    assert not (tmp_path / "res/runs/r/syn/nan/seed0/metrics.json").exists()


def test_masked_test_targets_are_counted_and_a_dataset_with_none_rankable_is_refused(tmp_path, capsys):
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(6):  # every user's last item repeats their first one: masked at test
        lines += [f"u{u}\ti{u}\t1", f"u{u}\ti{u + 10}\t2", f"u{u}\ti{u + 20}\t3", f"u{u}\ti{u}\t4"]
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep/rep.inter").write_text("\n".join(lines) + "\n")
    suite = tmp_path / "r.yaml"
    suite.write_text(RANGES.replace("syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 2}", f"rep: {{spec: 'atomic:{tmp_path / 'rep'}'}}")
                     .replace("  knn: {model: itemknn, params: {PARAMS}}\n", ""))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "res")]) == 2
    assert "no target can be ranked" in capsys.readouterr().err
    suite.write_text(RANGES.replace("  knn: {model: itemknn, params: {PARAMS}}\n", ""))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "res2")]) == 0
    import json
    rec = json.loads((tmp_path / "res2/runs/r/syn/pop/seed0/run.json").read_text())
    assert rec["masked_test_targets_evaluated"] >= 0
    md = (tmp_path / "res2/tables/r/syn-main.md").read_text()
    assert f"test targets in the user's own (masked) history: {rec['masked_test_targets_evaluated']} of the evaluated" in md


# ---- damaged records ----------------------------------------------------

def _drop(key):
    def damage(c):
        import json
        rec = json.loads((c / "run.json").read_text())
        del rec[key]
        (c / "run.json").write_text(json.dumps(rec))
    return damage


def _run_json_folder(c):
    (c / "run.json").unlink()
    (c / "run.json").mkdir()


@pytest.mark.parametrize("damage", [
    lambda c: (c / "run.json").write_bytes(b"\xff\xfe not utf-8 \x80"),
    lambda c: (c / "run.json").write_text("[]"),
    lambda c: (c / "run.json").write_text('"a string"'),
    _run_json_folder,
    _drop("fit_seconds"),
    _drop("dataset_stats"),
], ids=["not-utf8", "list", "string", "folder", "no-fit_seconds", "no-dataset_stats"])
def test_a_run_json_that_is_not_a_valid_record_makes_its_cell_not_done(tmp_path, capsys, damage):
    import json

    suite = tmp_path / "r.yaml"
    suite.write_text(RANGES.replace("  knn: {model: itemknn, params: {PARAMS}}\n", ""))
    res = tmp_path / "res"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    c = res / "runs/r/syn/pop/seed0"
    good = (c / "metrics.json").read_text()
    damage(c)
    capsys.readouterr()
    for command in (["plan", "--suite", str(suite)], ["table", "--suite", str(suite)], ["refingerprint"]):
        assert main([*command, "--results", str(res)]) == 0
        assert "Traceback" not in capsys.readouterr().err
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    out = capsys.readouterr()
    assert "syn/pop/seed0: recomputing:" in out.out + out.err and "cached" not in (out.out + out.err).split("pop/seed0")[1][:40]
    assert (c / "metrics.json").read_text() == good and json.loads((c / "run.json").read_text())["fit_seconds"] >= 0


@pytest.mark.parametrize("reference, message", [
    ('{"synthetic/pop/seed0": {"NDCG@10": "0.1"}}', "NDCG@10: must be a number"),
    ('{"synthetic/pop/seed0": [0.1, 0.2]}', "must map metric names to numbers"),
    ('[1, 2]', "must map each cell to its metrics"),
])
def test_a_damaged_reference_file_is_one_line(tmp_path, capsys, monkeypatch, reference, message):
    from bench.report import check

    monkeypatch.setattr(check, "fresh_metrics", lambda suite: {})
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference/smoke.json").write_text(reference)
    assert main(["check", "--suite", "smoke", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_plot_with_nothing_stored_says_so(tmp_path, capsys):
    assert main(["plot", "--suite", "smoke", "--results", str(tmp_path)]) == 2
    assert "nothing to plot" in capsys.readouterr().err

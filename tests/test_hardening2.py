"""Issue 35, hardening round two: the newer paths (tune, track, results folders) end with one line
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

"""Hardening, round four: no silently wrong number. Each case gave exit 0 and a number (or nothing)
before; each now ends with one line naming what is wrong."""

import numpy as np
import pytest

from bench.cli import main
from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.execute import fingerprint
from bench.execute.scoring import CellError, score_users
from bench.report.headline import END, START, replace_block
from bench.split import leave_one_out
from bench.suites.load import load_suite


class Fixed:
    """Returns whatever `make` builds for a batch of users."""

    def __init__(self, make):
        self.make = make

    def predict(self, histories, users):
        return self.make(len(users))


@pytest.fixture(scope="module")
def syn():
    return leave_one_out(load_dataset("synthetic", n_users=30, n_items=20, seed=4))


def test_an_integer_score_matrix_is_refused_not_read_as_ranked_lists(syn):
    ints = Fixed(lambda n: np.tile(np.arange(syn.n_items), (n, 1)))
    with pytest.raises(CellError, match="integer matrix of shape .* must hold float scores"):
        score_users(ints, syn, np.arange(5), "test", True, 8, "t")
    floats = Fixed(lambda n: np.tile(np.arange(syn.n_items, dtype=np.float32), (n, 1)))
    assert len(score_users(floats, syn, np.arange(5), "test", True, 8, "t").above) == 5


def test_rows_of_only_infinite_scores_are_refused(syn):
    blind = Fixed(lambda n: np.full((n, syn.n_items), -np.inf))
    with pytest.raises(CellError, match="only infinite scores for 5 of 5 users"):
        score_users(blind, syn, np.arange(5), "test", True, 8, "t")


DUPLICATED = """
seeds: [0]
ks: [10]
datasets:
  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}
models:
  pop: {model: pop}
  knn: {model: itemknn}
ablations:
  t: [pop, knn, knn]
"""


def test_a_variant_named_twice_in_an_ablation_table_is_refused(tmp_path):
    suite = tmp_path / "d.yaml"
    suite.write_text(DUPLICATED)
    with pytest.raises(BenchError, match="ablations.t names model variant 'knn' more than once"):
        load_suite(str(suite))


class Exits:
    def fit(self, split, ctx):
        raise SystemExit(0)

    def predict(self, histories, users):
        return np.zeros((len(users), 1))


EXITING = """
seeds: [0]
ks: [10]
datasets:
  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}
models:
  pop: {model: pop}
  exits: {model: "MODULE:Exits"}
"""


def test_a_model_that_calls_sys_exit_fails_its_cell_and_the_suite_goes_on(tmp_path, capsys):
    suite = tmp_path / "e.yaml"
    suite.write_text(EXITING.replace("MODULE", __name__))
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 1
    err = capsys.readouterr().err
    assert "exits/seed0 (failed: model" in err and "called sys.exit(0)" in err
    assert (res / "runs/e/syn/pop/seed0/run.json").is_file() and (res / "tables/e/syn-main.md").is_file()


def test_a_model_package_named_like_a_folder_of_this_checkout_is_still_found_and_hashed(monkeypatch, tmp_path):
    own = tmp_path / "tests" / "mymodel.py"
    own.parent.mkdir()
    own.write_text("class M:\n    pass\n")
    monkeypatch.setattr(fingerprint, "_installed_file", lambda name: own if name == "tests.mymodel" else None)
    assert fingerprint._module_file("tests.mymodel") == own
    assert fingerprint._module_file("calrec.recommender.CALRec") is None  # ours, a class: not a module


def test_a_generated_block_present_twice_is_refused(tmp_path):
    text = f"a\n{START}\nold\n{END}\nb\n{START}\nstale copy\n{END}\n"
    with pytest.raises(BenchError, match="markers appear more than once"):
        replace_block(text, "new\n", tmp_path / "README.md")
    with pytest.raises(BenchError, match="end marker comes before"):
        replace_block(f"{END}\nx\n{START}\n", "new\n", tmp_path / "README.md")
    assert replace_block(f"a\n{START}\nold\n{END}\nb\n", "new\n", tmp_path / "README.md") == f"a\n{START}\nnew\n{END}\nb\n"


def test_a_namespace_folder_named_like_the_model_module_is_said_plainly(tmp_path, monkeypatch):
    from bench.interop.external import register

    (tmp_path / "nsmodel_xyz").mkdir()  # a folder with no module file: Python imports it as a namespace
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BenchError, match="imported nsmodel_xyz as the folder .*nsmodel_xyz, which has no"):
        register("nsmodel_xyz:RecentPop", "suite s")
    (tmp_path / "broken_xyz.py").write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(BenchError, match="importing broken_xyz failed: RuntimeError: boom at import"):
        register("broken_xyz:M", "suite s")


def test_headline_never_rewrites_the_checkouts_readme_from_another_results_folder(tmp_path, capsys):
    from bench.cli.commands import RESULTS

    readme = RESULTS.parent / "README.md"
    before = readme.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["headline", "--results", str(empty)]) == 2
    assert "name the README to rewrite with --readme" in capsys.readouterr().err
    mine = tmp_path / "README.md"
    mine.write_bytes(before)
    assert main(["headline", "--results", str(empty), "--readme", str(mine)]) == 2
    assert "no stored runs" in capsys.readouterr().err
    assert readme.read_bytes() == before and mine.read_bytes() == before


SAMPLED = """
seeds: [0]
ks: [10]
datasets:
  s: {spec: "sample:synthetic", users: 50}
models:
  pop: {model: pop}
"""


def test_a_sampled_dataset_with_its_users_runs(tmp_path):
    """It stopped with "missing a required argument: 'users'": the fingerprint resolved the loader
    without the entry's parameters."""
    suite = tmp_path / "samp.yaml"
    suite.write_text(SAMPLED)
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r/runs/samp/s/pop/seed0/run.json").is_file()


class Sleeps:
    def fit(self, split, ctx):
        import time

        time.sleep(60)  # a model that never returns, as far as the suite can tell

    def predict(self, histories, users):
        return np.zeros((len(users), 1))


HANGING = """
seeds: [0]
ks: [10]
cell_timeout: 1.5
datasets:
  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}
models:
  sleeps: {model: "MODULE:Sleeps"}
  pop: {model: pop}
"""


def test_a_cell_past_the_time_limit_ends_with_one_line_and_the_suite_goes_on(tmp_path, capsys):
    import time

    suite = tmp_path / "h.yaml"
    suite.write_text(HANGING.replace("MODULE", __name__))
    res = tmp_path / "r"
    t0 = time.monotonic()
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 1
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert "sleeps/seed0 (failed: ran past the cell time limit of 1.5 s" in err
    assert (res / "runs/h/syn/pop/seed0/run.json").is_file() and not (res / "runs/h/syn/sleeps/seed0/run.json").exists()
    assert main(["run", "--suite", str(suite), "--results", str(res), "--cell-timeout", "-1"]) == 2


def test_seed_level_tests_carry_a_per_user_reading_and_the_findings_say_whether_they_agree():
    from bench.execute.fingerprint import ROOT
    from bench.report.comparisons import compare_rows
    from bench.report.findings import agreement
    from bench.report.results import load_runs

    suite = load_suite("ablation")
    runs, _ = load_runs(suite, ROOT / "results", "ml-100k")
    rows = ["calrec-i-ii", "calrec-ii", "calrec-untrained"]
    tests = {c.row: c for c in compare_rows(suite, runs, rows, "calrec-i-ii", ["NDCG@10"])}
    seeds, single = tests["calrec-ii"], tests["calrec-untrained"]
    assert seeds.kind == "seeds" and 0 < seeds.p_users < 1
    a, b = runs["calrec-ii"].user_metric("NDCG@10", suite.ks, seeds.seeds), runs["calrec-i-ii"].user_metric("NDCG@10", suite.ks, seeds.seeds)
    from scipy import stats
    assert seeds.p_users == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert agreement(seeds).endswith("(agrees)" if (seeds.p < 0.05) == (seeds.p_users < 0.05) else "(disagrees)")
    assert single.kind == "deterministic" and single.p_users is None and agreement(single) == ""


LABELLED = """
seeds: [0]
ks: [10]
datasets:
  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}
models:
  pop: {model: pop, label: LABEL}
"""


@pytest.mark.parametrize("label", ['"Pop | ular"', '"Pop\\nular"'])
def test_a_label_that_would_split_a_table_row_is_refused(tmp_path, capsys, label):
    """A '|' or a line break in a label broke the markdown tables it was printed in."""
    suite = tmp_path / "lab.yaml"
    suite.write_text(LABELLED.replace("LABEL", label))
    assert main(["plan", "--suite", str(suite)]) == 2
    assert "models.pop.label" in capsys.readouterr().err


def test_latex_escapes_braces_tildes_and_carets_once():
    from bench.report.tables import _tex

    assert _tex(r"a\b_{x}~^%") == r"a\textbackslash{}b\_\{x\}\textasciitilde{}\textasciicircum{}\%"


def test_an_overlong_variant_name_is_refused_before_the_file_system_refuses_it(tmp_path, capsys):
    suite = tmp_path / "long.yaml"
    suite.write_text(LABELLED.replace("pop: {model: pop, label: LABEL}", f"{'p' * 300}: {{model: pop}}"))
    assert main(["plan", "--suite", str(suite)]) == 2
    assert "300 characters long" in capsys.readouterr().err


class WritesIntoItsFolder:
    """Writes a relative file while fitting, and reads a dataset folder named relative to the launch."""

    def fit(self, split, ctx):
        from pathlib import Path

        Path("stray.txt").write_text("x")
        self.events = len(load_dataset("atomic:toy").user)

    def predict(self, histories, users):
        return np.tile(np.arange(20, dtype=float), (len(users), 1))


def test_a_cell_runs_in_a_scratch_folder_and_relative_paths_still_mean_the_launch_folder(tmp_path, monkeypatch, capsys):
    """A model that wrote relative files wrote them into the user's folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy/toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" +
                                            "".join(f"u{u}\ti{(u + k) % 5}\t{k}\n" for u in range(4) for k in range(4)))
    (tmp_path / "w.yaml").write_text(LABELLED.replace("pop: {model: pop, label: LABEL}",
                                                      f"w: {{model: '{__name__}:WritesIntoItsFolder'}}"))
    assert main(["run", "--suite", "w.yaml", "--results", "r"]) == 0
    assert not (tmp_path / "stray.txt").exists() and (tmp_path / "r/runs/w/syn/w/seed0/run.json").is_file()
    said = capsys.readouterr()
    assert "wrote 1 entry into its working folder (stray.txt); removed" in said.out + said.err


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_training_state_is_said_removed_and_training_starts_over(syn, tmp_path, capsys, damage):
    """A damaged resumable checkpoint jammed its cell for ever (`--force` included): torch.load raised,
    or a changed weight was resumed from without a word."""
    import baselines.neural as neural
    from bench.models import FitContext, make_model

    params = {"hidden": 8, "max_len": 5, "epochs": 2, "patience": 100}

    def fit(workdir):
        m = make_model("sasrec", params)
        m.fit(syn, FitContext(seed=1, workdir=workdir, valid_users=np.arange(10), extra={"checkpoint_key": "k"}))
        return m

    real_clear = neural.resume.clear
    neural.resume.clear = lambda path: None  # keep the last epoch's state, as a kill after it would
    try:
        fit(tmp_path)
    finally:
        neural.resume.clear = real_clear
    state = tmp_path / "train_state.pt"
    data = bytearray(state.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data[: len(data) // 3]) if damage == "truncate" else b"not a torch file" if damage == "garbage" else bytes(data))
    capsys.readouterr()
    m = fit(tmp_path)
    assert m.info()["resumed_at_epoch"] is None and m.info()["epochs_run"] == 2
    said = capsys.readouterr()
    assert "train_state.pt: its checksum does not match its bytes (damaged); removed" in said.out + said.err


def test_a_missing_or_folder_readme_gets_one_line(tmp_path, capsys):
    """`bench headline --readme` and `bench check --readme` raised FileNotFoundError / IsADirectoryError."""
    (tmp_path / "folder.md").mkdir()
    for page, why in (("missing.md", "no such file"), ("folder.md", "is not a file")):
        assert main(["headline", "--readme", str(tmp_path / page)]) == 2
        assert why in capsys.readouterr().err


@pytest.mark.parametrize("where, err", [("lock", 30), ("write_cell", 28)])  # EROFS: read-only runs/; ENOSPC: disk full
def test_a_runs_folder_that_cannot_be_written_fails_each_cell_with_one_line(tmp_path, monkeypatch, capsys, where, err):
    import os

    from bench.execute.store import RunStore

    def refuse(*args):
        raise OSError(err, os.strerror(err), "runs")

    suite = tmp_path / "lab.yaml"
    suite.write_text(LABELLED.replace(", label: LABEL", ""))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 0
    monkeypatch.setattr(RunStore, where, staticmethod(refuse))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--force"]) == 1
    said = capsys.readouterr()
    assert f"syn/pop/seed0 (failed: OSError: [Errno {err}]" in said.err and "Traceback" not in said.out + said.err


def test_plots_of_rows_a_suite_no_longer_has_are_removed_and_others_kept(tmp_path, capsys):
    """A plot of a table or row taken out of the suite file showed numbers no stored run backs any more."""
    suite = tmp_path / "mine.yaml"
    body = ("seeds: [0]\nks: [1, 10]\ndatasets:\n  syn: {spec: synthetic, n_users: 60, n_items: 30, seed: 1}\n"
            "models:\n  pop: {model: pop}\n  random: {model: random}\n")
    suite.write_text(body + "ablations: {t: [pop, random], gone: [pop, random]}\n")
    results = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--results", str(results)]) == 0
    assert main(["plot", "--suite", str(suite), "--results", str(results)]) == 0
    out = results / "plots" / "mine"
    assert (out / "syn-ablation-gone.png").is_file()
    (out / "other-dataset-main.png").write_bytes(b"x")  # not a dataset this suite drew: not ours to judge
    (out / "notes.txt").write_text("kept")
    suite.write_text(body + "ablations: {t: [pop, random]}\n")  # the table `gone` taken out
    capsys.readouterr()
    assert main(["plot", "--suite", str(suite), "--results", str(results)]) == 0
    assert not (out / "syn-ablation-gone.png").exists() and not (out / "syn-ablation-gone.pdf").exists()
    assert "removed" in capsys.readouterr().out
    assert (out / "syn-ablation-t.png").is_file() and (out / "other-dataset-main.png").is_file()
    assert (out / "notes.txt").read_text() == "kept"


def test_a_cell_killed_outright_is_named_by_plan_and_run_and_a_finished_one_leaves_nothing(tmp_path, capsys):
    """The kernel's out-of-memory killer ends a cell without a word: before, the next plan said "not run
    yet" and the next run started it again as if nothing had happened."""
    import json
    import subprocess
    import sys

    from bench.execute.attempt import attempt_file, read_attempt

    suite = tmp_path / "mine.yaml"
    suite.write_text("seeds: [0]\nks: [10]\ndatasets:\n  syn: {spec: synthetic, n_users: 40, n_items: 20, seed: 1}\n"
                     "models:\n  pop: {model: pop}\n")
    results = tmp_path / "results"
    cell = results / "runs" / "mine" / "syn" / "pop" / "seed0"
    cell.parent.mkdir(parents=True)
    killed = ("import os, signal, sys, time; from pathlib import Path; from bench.execute.attempt import recorded_attempt\n"
              "with recorded_attempt(Path(sys.argv[1]), every=0.05):\n"
              "    time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", killed, str(cell)]).returncode == -9
    left = read_attempt(cell)
    assert left["pid"] and left["host_peak_mb"] > 0 and left["updated"] >= left["started"]
    assert main(["plan", "--suite", str(suite), "--results", str(results)]) == 0
    assert "ended without a result or an error" in capsys.readouterr().out
    json.loads(attempt_file(cell).read_text())  # the plan only reads it
    assert main(["run", "--suite", str(suite), "--results", str(results)]) == 0
    assert "an earlier attempt" in "".join(capsys.readouterr())
    assert (cell / "metrics.json").is_file() and not attempt_file(cell).exists()
    assert not list(cell.parent.glob(".*.attempt.json"))

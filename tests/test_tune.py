"""bench tune (Optuna on validation only) and --track mlflow, on tiny synthetic suites."""
import json

import numpy as np
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.models import MODELS
from bench.suites.load import load_suite

optuna = pytest.importorskip("optuna")

# Every user's last (test) item is an item that occurs nowhere else: any code that reads test
# targets, or test-stage inputs, would see a T-item.
SUITE = """
description: tune test
seeds: [3]
ks: [5, 10]
datasets:
  heldout: {spec: "atomic:{inter}"}
  other: {spec: synthetic, n_users: 40, n_items: 30, seed: 2}
models:
  pop: {model: pop}
  probe: {model: probe, params: {alpha: 0.5}, tune: {alpha: {low: 0.0, high: 1.0}, width: {choices: [1, 2]}}}
reference: pop
"""


class Probe:
    """Scores items by popularity plus `alpha` noise; logs a validation curve that equals alpha;
    remembers every item it was shown."""
    seen: set = set()

    def __init__(self, alpha: float = 0.5, width: int = 1, epochs: int = 8):
        self.alpha, self.width, self.epochs = alpha, width, epochs

    def fit(self, split, ctx):
        Probe.seen |= {split.item_ids[i] for seq in split.train for i in seq}
        Probe.seen |= {split.item_ids[i] for i in np.concatenate([split.valid, split.test])}
        self.pop = np.bincount(np.concatenate(split.train), minlength=split.n_items).astype(float)
        self.rng = np.random.default_rng(ctx.seed)
        for epoch in range(1, self.epochs + 1):
            ctx.curves.append({"epoch": epoch, "valid_NDCG@10": self.alpha})
        self.epochs_run = self.epochs

    def predict(self, histories, users):
        Probe.seen |= {self.item_ids[i] for h in histories for i in h} if hasattr(self, "item_ids") else set()
        return (1 - self.alpha) * self.pop / self.pop.max() + self.alpha * self.rng.random((len(histories), len(self.pop)))


class RecordingProbe(Probe):
    def fit(self, split, ctx):
        self.item_ids = split.item_ids
        super().fit(split, ctx)


@pytest.fixture
def suite_file(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "probe", "test_tune:RecordingProbe")
    rng = np.random.default_rng(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(30):
        for t in range(6):
            lines.append(f"u{u}\ti{rng.integers(0, 15)}\t{t}")
        lines.append(f"u{u}\tT{u}\t100")  # the held-out item, unique to this user
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout/heldout.inter").write_text("\n".join(lines) + "\n")
    p = tmp_path / "tunetest.yaml"
    p.write_text(SUITE.replace("{inter}", str(tmp_path / "heldout")))
    Probe.seen = set()
    return p


def test_a_search_never_sees_a_test_target_but_a_run_does(suite_file, tmp_path, capsys):
    res = tmp_path / "res"
    assert main(["tune", "--suite", str(suite_file), "--model", "probe", "--dataset", "heldout", "--trials", "4",
                 "--results", str(res)]) == 0
    assert Probe.seen and not {i for i in Probe.seen if str(i).startswith("T")}  # trials ran, no T-item seen
    assert main(["run", "--suite", str(suite_file), "--models", "probe-tuned", "--results", str(res)]) == 0
    assert {i for i in Probe.seen if str(i).startswith("T")}  # the control: testing does show them


def test_tuned_variant_is_written_run_and_recorded(suite_file, tmp_path, capsys):
    res = tmp_path / "res"
    assert main(["tune", "--suite", str(suite_file), "--model", "probe", "--dataset", "heldout", "--trials", "6",
                 "--results", str(res)]) == 0
    suite = load_suite(str(suite_file), res)
    tuned = suite.variant("probe-tuned")
    entry = tuned.tuned["heldout"]
    study = optuna.load_study(study_name="heldout/probe", storage=f"sqlite:///{res / 'tune/tunetest/optuna.db'}")
    assert entry["trial"] == study.best_trial.number and entry["value"] == pytest.approx(study.best_value, abs=1e-6)
    assert tuned.params_for("heldout")["alpha"] == study.best_trial.params["alpha"]
    assert suite.ablations["tuning-probe"] == ["probe", "probe-tuned"]
    assert load_suite(str(suite_file)).variants[-1].key == "probe"  # without a results folder: no overlay
    for name in ("trials.csv", "history.png", "importances.png"):
        assert (res / "tune/tunetest/heldout/probe" / name).stat().st_size > 0
    assert main(["run", "--suite", str(suite_file), "--results", str(res)]) == 0
    rec = json.loads((res / "runs/tunetest/heldout/probe-tuned/seed3/run.json").read_text())
    assert rec["tuning"]["study"] == "heldout/probe" and rec["tuning"]["trial"] == entry["trial"]
    assert not (res / "runs/tunetest/other/probe-tuned").exists()  # tuned on heldout only
    assert (res / "tables/tunetest/heldout-ablation-tuning-probe.md").is_file()
    assert not (res / "tables/tunetest/other-ablation-tuning-probe.md").exists()


def test_a_search_resumes_its_study_and_prunes_trailing_curves(suite_file, tmp_path):
    from bench.execute.tune import Search, run_search

    res = tmp_path / "res"
    search = Search(load_suite(str(suite_file)), "probe", "heldout")
    first = [t.params for t in run_search(search, res, trials=3).trials]
    study = run_search(search, res, trials=14)
    states = [t.state for t in study.trials]
    assert [t.params for t in study.trials[:3]] == first  # the same study went on
    assert study.trials[3].params not in first  # and did not draw its start-up trials again
    assert sum(s.is_finished() for s in states) == 14
    assert optuna.trial.TrialState.PRUNED in states  # curves below the median (alpha is the curve) stopped early
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(max(t.intermediate_values) < 8 for t in pruned)
    assert len(run_search(search, res, trials=14).trials) == 14  # already done: no new trial


@pytest.mark.parametrize("space, message", [
    ("{alpha: {low: 1.0, high: 0.5}}", "low (1.0) must be below high"),
    ("{alpha: {low: 0.0, high: 1.0, log: true}}", "a log scale needs low > 0"),
    ("{alpha: {low: 0.1, hihg: 1.0}}", "unknown key 'hihg' (allowed: low, high, log, step, choices)"),
    ("{alpha: {choices: [1, 2], low: 0}}", "either choices or low/high"),
    ("{beta: {low: 0.1, high: 1.0}}", "'beta' is not a parameter of model 'probe'"),
    ("{alpha: {choices: [a, b]}}", "parameter 'alpha' must be float"),
])
def test_bad_search_spaces_are_one_line_errors(suite_file, tmp_path, space, message, capsys):
    bad = suite_file.read_text().replace("tune: {alpha: {low: 0.0, high: 1.0}, width: {choices: [1, 2]}}", f"tune: {space}")
    suite_file.write_text(bad)
    assert main(["tune", "--suite", str(suite_file), "--model", "probe", "--dataset", "heldout",
                 "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_tune_refuses_a_variant_without_a_space_and_an_unknown_metric(suite_file, tmp_path, capsys):
    for args, message in ((["--model", "pop"], "declares no `tune:` space"),
                          (["--model", "probe", "--metric", "NDCG@50"], "not one the suite computes")):
        assert main(["tune", "--suite", str(suite_file), "--dataset", "heldout", "--results", str(tmp_path), *args]) == 2
        assert message in capsys.readouterr().err


def test_missing_extras_are_one_line_errors(suite_file, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path), "--track", "mlflow"]) == 2
    assert "pip install -e '.[track]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", "--suite", str(suite_file), "--model", "probe", "--dataset", "heldout", "--results", str(tmp_path)]) == 2
    assert "pip install -e '.[tune]'" in capsys.readouterr().err
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path), "--track", "wandb"]) == 2
    assert "unknown tracker" in capsys.readouterr().err


def test_track_logs_the_smoke_suite_to_mlflow_and_reads_it_back(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    res = tmp_path / "res"
    assert main(["run", "--suite", "smoke", "--results", str(res), "--track", "mlflow"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{res / 'mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"synthetic/{v}/seed0" for v in ("bm25-text", "itemknn", "pop", "random")]
    knn = next(r for r in runs if r.info.run_name == "synthetic/itemknn/seed0")
    stored = json.loads((res / "runs/smoke/synthetic/itemknn/seed0/metrics.json").read_text())
    record = json.loads((res / "runs/smoke/synthetic/itemknn/seed0/run.json").read_text())
    assert knn.data.metrics["NDCG_at_10"] == pytest.approx(stored["NDCG@10"])
    assert knn.data.metrics["host_peak_mb"] > 0  # the cell's peak memory, beside its wall times
    assert knn.data.params["model.name"] == "itemknn" and knn.data.params["seed"] == "0"
    assert knn.data.tags["commit"] == record["commit"] and knn.data.tags["config_hash"] == record["config_hash"]
    assert {a.path for a in client.list_artifacts(knn.info.run_id)} >= {"run.json", "per_user.csv.gz", "metrics.json"}
    assert main(["run", "--suite", "smoke", "--results", str(res), "--track", "mlflow"]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 4  # stored cells are not logged twice


def test_tune_track_logs_each_trial(suite_file, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    res = tmp_path / "res"
    assert main(["tune", "--suite", str(suite_file), "--model", "probe", "--dataset", "heldout", "--trials", "3",
                 "--results", str(res), "--track", "mlflow"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{res / 'mlflow/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tune/tunetest/heldout/probe").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["trial 0", "trial 1", "trial 2"]
    assert all("objective" in r.data.metrics and "alpha" in r.data.params for r in runs)
    history = client.get_metric_history(runs[0].info.run_id, "curve.valid")
    assert [m.step for m in history] == list(range(1, 9))  # the curve the pruner read, per epoch


def test_a_calrec_space_is_checked_through_its_grouped_config():
    from bench.suites.schema import TuneRange
    from bench.execute.tune import check_space

    params = load_suite("quick").variant("calrec").params_for("ml-100k")
    check_space("calrec", params, {"lr": TuneRange(low=1.0e-4, high=1.0e-2, log=True)}, "x")  # CALRec takes **params
    with pytest.raises(BenchError, match="unknown parameter 'lrr'"):
        check_space("calrec", params, {"lrr": TuneRange(low=1.0e-4, high=1.0e-2, log=True)}, "x")

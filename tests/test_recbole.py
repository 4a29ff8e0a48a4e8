"""The RecBole adapter: trains on OUR split, and its ids map back faithfully."""
import sys

import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.evaluate import metrics_from_ranks
from bench.models import FitContext, make_model
from bench.execute.scoring import score_users
from bench.split import leave_one_out


@pytest.fixture(scope="module")
def syn():
    return leave_one_out(load_dataset("synthetic", n_users=150, n_items=60, seed=4))


def fit(syn, tmp_path, model, **params):
    m = make_model("recbole", {"model": model, "epochs": 3, "patience": 3, "max_len": 20, **params})
    m.fit(syn, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(syn.n_users)))
    return m


def test_faithful_to_recboles_own_evaluator(syn, tmp_path):
    """With history masking off, our numbers equal RecBole's on the same test split: the adapter
    does not shift ids. (Float scores: ties have probability ~0, so tie handling cannot differ.)"""
    m = fit(syn, tmp_path, "SASRec")
    users = np.arange(syn.n_users)
    ours = metrics_from_ranks(score_users(m, syn, users, "test", False, 64, "t"), [10])
    theirs = m.recbole_test_metrics()
    assert ours["Recall@10"].mean() == pytest.approx(theirs["recall@10"], abs=1e-4)
    assert ours["NDCG@10"].mean() == pytest.approx(theirs["ndcg@10"], abs=1e-4)
    assert theirs["recall@10"] > 10 / syn.n_items  # it learned something, so the check has teeth


def test_scrambled_ids_would_be_caught(syn, tmp_path):
    m = fit(syn, tmp_path, "GRU4Rec")
    users = np.arange(syn.n_users)
    theirs = m.recbole_test_metrics()["ndcg@10"]
    m.to_recbole = np.roll(m.to_recbole, 1)  # a one-off id shift
    ours = metrics_from_ranks(score_users(m, syn, users, "test", False, 64, "t"), [10])["NDCG@10"].mean()
    assert abs(ours - theirs) > 1e-3


def test_compat_layer_and_argv(syn, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench", "--epochs=99", "--learning_rate=5"])
    m = fit(syn, tmp_path, "NARM")
    assert m.config["epochs"] == 3 and m.config["learning_rate"] == 1e-3
    import torch

    assert not torch.is_anomaly_enabled()
    assert hasattr(np, "float_")
    s = m.predict(syn.inputs("test", np.arange(4)), np.arange(4))
    assert s.shape == (4, syn.n_items) and np.isfinite(s).all()


class Stopped(Exception):
    pass


def _stop_after_saves(monkeypatch, n: int) -> None:
    """The process dies right after the n-th epoch's state is saved."""
    import baselines.recbole_adapter as adapter

    real, calls = adapter.resume.save, []

    def save_then_die(*args):
        real(*args)
        calls.append(1)
        if len(calls) == n:
            raise Stopped

    monkeypatch.setattr(adapter.resume, "save", save_then_die)


def _resumable_fit(syn, workdir, key="k", **params):
    m = make_model("recbole", {"model": "GRU4Rec", "epochs": 5, "patience": 100, "max_len": 20,
                               "config": {"dropout_prob": 0.3}, **params})
    ctx = FitContext(seed=2, workdir=workdir, valid_users=np.arange(syn.n_users), extra={"checkpoint_key": key})
    m.fit(syn, ctx)
    return m, [{k: v for k, v in row.items() if k != "elapsed_seconds"} for row in ctx.curves]


def _same_weights(a, b) -> None:
    import torch

    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_a_stopped_recbole_training_resumes_at_its_next_epoch_and_ends_as_an_unstopped_one(syn, tmp_path, monkeypatch):
    whole, whole_curves = _resumable_fit(syn, tmp_path / "a")
    assert not (tmp_path / "a/train_state.pt").exists()  # removed once training ends
    with monkeypatch.context() as mp:
        _stop_after_saves(mp, 2)
        with pytest.raises(Stopped):
            _resumable_fit(syn, tmp_path / "b")
    assert (tmp_path / "b/train_state.pt").exists()
    resumed, resumed_curves = _resumable_fit(syn, tmp_path / "b")
    assert resumed.info()["resumed_at_epoch"] == 3 and whole.info()["resumed_at_epoch"] is None
    assert resumed.info()["epochs_run"] == 5 and resumed_curves == whole_curves
    assert resumed.info()["fit_seconds_before_resume"] > 0
    _same_weights(whole, resumed)  # the best epoch's, as both reloaded them
    users = np.arange(20)
    np.testing.assert_array_equal(whole.predict(syn.inputs("test", users), users),
                                  resumed.predict(syn.inputs("test", users), users))
    # A state saved under another key (other config or code) is never resumed from.
    with monkeypatch.context() as mp:
        _stop_after_saves(mp, 2)
        with pytest.raises(Stopped):
            _resumable_fit(syn, tmp_path / "c")
    fresh, _ = _resumable_fit(syn, tmp_path / "c", key="other")
    assert fresh.info()["resumed_at_epoch"] is None


def test_a_resumed_recbole_run_keeps_a_best_epoch_from_before_the_stop(syn, tmp_path, monkeypatch):
    """RecBole names its best-model file afresh on each start; a run whose best epoch came before the
    stop must still end with that epoch's weights."""
    from baselines.recbole_compat import import_recbole

    import_recbole()  # its stubs first (tensorboard)
    import recbole.trainer.trainer as recbole_trainer

    def first_epoch_best(value, best, cur_step, max_step, bigger=True):  # epoch 1 is the best, always
        if best == -np.inf:
            return value, 0, False, True
        return best, cur_step + 1, cur_step + 1 > max_step, False

    monkeypatch.setattr(recbole_trainer, "early_stopping", first_epoch_best)
    whole, _ = _resumable_fit(syn, tmp_path / "a")
    with monkeypatch.context() as mp:
        _stop_after_saves(mp, 3)
        with pytest.raises(Stopped):
            _resumable_fit(syn, tmp_path / "b")
    resumed, _ = _resumable_fit(syn, tmp_path / "b")
    assert resumed.info()["resumed_at_epoch"] == 4
    _same_weights(whole, resumed)


def test_a_max_len_beyond_the_longest_history_still_ranks(syn, tmp_path):
    # RecBole sizes CORE's position table by the longest training sequence (under 30 here); the adapter
    # padded test histories to max_len, past the table's end (IndexError)
    m = fit(syn, tmp_path, "CORE", max_len=50, epochs=1)
    scores = m.predict(syn.inputs("test", np.arange(5)), np.arange(5))
    assert scores.shape == (5, syn.n_items) and np.isfinite(scores).all()

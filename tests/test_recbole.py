"""The RecBole adapter: trains on OUR split, and its ids map back faithfully."""
import sys

import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.evaluate import metrics_from_ranks
from bench.models import FitContext, make_model
from bench.runner import score_users
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

"""Every CALRec row a suite declares trains and ranks, shrunk to the tiny random LLM and a few steps.

A suite row is a combination of switches, and a combination nobody tried can fail deep into a long
fit: the ablation's contrastive-only row stopped 13.5 minutes into its first evaluation (no L_NIG,
so no validation NLL to select on). Here each row keeps its own switches (losses, template, vocab,
pooling, selection, inference, frozen cache, stage I) and only its sizes shrink: that row's code
path runs in seconds."""
import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.execute.scoring import score_users
from bench.models import FitContext, make_model
from bench.split import leave_one_out
from bench.execute.verify import tiny_params
from bench.suites.load import load_suite

SUITES = ("ablation", "quick", "full", "paper", "gpu")
def small_params(params: dict) -> dict:
    return tiny_params("calrec", params)  # the verified re-fingerprint shrinks a row the same way


def calrec_rows():
    rows, seen = [], set()
    for name in SUITES:
        suite = load_suite(name)
        for v in suite.variants:
            if v.model != "calrec":
                continue
            for d in suite.datasets:
                if not v.runs_on(d.key):
                    continue
                params = small_params(v.params_for(d.key))
                key = repr(sorted(params.items(), key=lambda kv: kv[0]))
                if key not in seen:  # rows that differ only in sizes run once
                    seen.add(key)
                    rows.append(pytest.param(params, id=f"{name}/{v.key}"))
    return rows


@pytest.fixture(scope="module")
def syn():
    return leave_one_out(load_dataset("synthetic", n_users=40, n_items=30, seed=5))


@pytest.mark.slow
@pytest.mark.parametrize("params", calrec_rows())
def test_every_calrec_row_of_a_suite_trains_and_ranks(params, syn, tmp_path):
    m = make_model("calrec", params)
    m.fit(syn, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(syn.n_users),
                          extra={"shared_cache": tmp_path, "history_masking": True}))
    ranks = score_users(m, syn, np.arange(3), "test", True, 3, "row")  # checks what the model returns
    assert len(ranks) == 3 and (ranks.above >= 0).all()

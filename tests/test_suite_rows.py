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
from bench.suites.load import load_suite

SUITES = ("ablation", "quick", "full", "paper")
# Sizes only: every switch of the row stays as the suite sets it.
SMALL = {"backbone": "tiny", "batch_size": 4, "contrastive_batch": 0, "micro_batch": 0, "valid_users": 6,
         "device": "cpu", "bf16": False, "threads": 1, "n_samples": 2, "max_new_tokens": 8, "list_length": 20,
         "warmup": 1, "max_history": 5}


def small_params(params: dict) -> dict:
    p = {**params, **SMALL}
    if p.get("stage1"):
        # the real domains are hundreds of MB of prompts: a user sample of another synthetic dataset and
        # the target keep the mixture path (and the {spec: ...} form the ablation uses)
        other = {"spec": "sample:synthetic", "users": 20, "seed": 0}
        p["stage1"] = {**p["stage1"], "datasets": [other, "synthetic"], "steps": 2}
    if p.get("stage2_steps", 1):
        p["stage2_steps"], p["eval_every"] = 2, 1
    if p.get("item_fields"):  # the synthetic items have a Title and a Category (no Year, no Brand)
        p["item_fields"] = [f for f in p["item_fields"] if f in ("Title", "Category")] or ["Title"]
    if p.get("train_layers"):
        p["train_layers"] = 1  # the tiny model has two layers: one frozen, one trained
    if isinstance(p.get("candidates"), dict):
        p["candidates"] = {k: min(v, 5) for k, v in p["candidates"].items()}
    return p


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


def test_quick_calrec_trains_the_ablations_stage2_model():
    """quick's CALRec rows claim to reuse the ablation's stage-II weights (only scoring is theirs):
    that holds only while the training settings, seed and validation users are the same."""
    quick, ablation = load_suite("quick"), load_suite("ablation")
    q, a = quick.variant("calrec"), ablation.variant("calrec-stage2")
    def declared(params):  # an absent switch and one set to null (stage1) are the same default
        return {k: v for k, v in params.items() if v is not None}
    assert declared(q.params_for("ml-100k")) == declared(a.params_for("ml-100k"))
    assert quick.valid_sample == ablation.valid_sample
    assert 0 in quick.seeds and 0 in ablation.seeds

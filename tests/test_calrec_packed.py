"""Packed steps (calrec/packed.py) give the padded step's losses and gradients: the GPU path
trains what the CPU recipe's padded path trains. fp32 on the tiny random Llama; tolerance 1e-5."""
import numpy as np
import pytest
import torch

from bench.datasets import load_dataset
from bench.split import leave_one_out
from calrec.backbone import tiny_llama, tiny_tokenizer
from calrec.packed import pack, packed_loss
from calrec.text import PromptBuilder
from calrec.towers import LossWeights, calrec_loss, collate


@pytest.fixture(scope="module")
def setup():
    syn = leave_one_out(load_dataset("synthetic", n_users=40, n_items=30, seed=3))
    tok = tiny_tokenizer([" ".join(a.values()) for a in syn.item_text])
    return syn, tok


def builder(syn, tok):
    return PromptBuilder(tok, syn.item_text, max_history=4, template="compact")


def step(syn, tok, nig_targets, trie, users=range(6), masks=True):
    b = builder(syn, tok)
    prompts = [b.user_prompt(syn.train[u][:-1], target=int(syn.train[u][-1])) for u in users]
    targets = [int(syn.train[u][-1]) for u in users]
    vocab = torch.tensor(b.vocab) if trie else None
    return collate(prompts, [b.item_ids(t) for t in targets], targets, tok.pad_token_id, nig_targets,
                   item_logq=[-1.0 - 0.1 * k for k in range(len(targets))], vocab=vocab, trie=b.trie if trie else None,
                   masks=masks)


def grads(model, head, loss_fn):
    model.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    total, parts = loss_fn()
    total.backward()
    return parts, {n: p.grad.clone() for n, p in [*model.named_parameters(), *head.named_parameters()] if p.grad is not None}


@pytest.mark.parametrize("user_pooling, pooling, nig_targets, trie", [
    ("history", "mean", "last", False), ("items", "last", "all", True), ("next", "mean", "all", True),
    ("history", "last", "all", False)])
def test_a_packed_step_gives_the_padded_steps_losses_and_gradients(setup, user_pooling, pooling, nig_targets, trie):
    syn, tok = setup
    torch.manual_seed(0)
    model = tiny_llama(len(tok), seed=1)
    head = torch.nn.Linear(model.config.hidden_size, 8)
    batch = step(syn, tok, nig_targets, trie)
    w = LossWeights(nig=1.0, tt=0.5, ut=0.5, tau=0.1, pooling=pooling, user_pooling=user_pooling, logq=True, nig_per="item")
    longest = int(batch.user_mask.sum(1).max())
    packed = pack(batch, length=longest + 7, rows=None)
    assert packed.ids.shape[0] < batch.user_ids.shape[0] + batch.item_ids.shape[0]  # several texts share a row
    assert packed.n_tokens == batch.n_tokens
    padded_parts, padded_grads = grads(model, head, lambda: calrec_loss(model, head, batch, w))
    packed_parts, packed_grads = grads(model, head, lambda: packed_loss(model, head, packed, w))
    for k in padded_parts:
        torch.testing.assert_close(packed_parts[k], padded_parts[k], rtol=1e-5, atol=1e-5)
    assert padded_grads.keys() == packed_grads.keys()
    for k in padded_grads:
        torch.testing.assert_close(packed_grads[k], padded_grads[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("nig_per", ["item", "token"])
def test_trie_masks_gathered_from_the_branch_table_give_the_same_losses_and_gradients(setup, nig_per):
    """Labels at one-child nodes are dropped before the LM head (their log-probability is exactly 0),
    the rest get their masks from the table by row index: losses and gradients as the padded step's."""
    syn, tok = setup
    torch.manual_seed(0)
    model = tiny_llama(len(tok), seed=1)
    head = torch.nn.Linear(model.config.hidden_size, 8)
    batch = step(syn, tok, "all", True, users=range(8))
    b = builder(syn, tok)
    branches = b.trie.branch_masks(torch.tensor(b.vocab))
    row = branches.row[batch.label_node]
    certain = row < 0
    assert 0 < int(certain.sum()) < len(row)  # both kinds of label occur in this step
    assert torch.equal(branches.allowed[row[~certain]], batch.allowed[~certain])
    assert bool((batch.allowed[certain].sum(1) == 1).all())
    w = LossWeights(nig=1.0, tt=0.5, ut=0.5, tau=0.1, pooling="mean", user_pooling="items", logq=True, nig_per=nig_per)
    lean = step(syn, tok, "all", True, users=range(8), masks=False)
    assert lean.allowed is None and torch.equal(lean.label_node, batch.label_node)
    packed = pack(lean, length=96, branches=branches)
    assert len(packed.label_index) == int((~certain).sum()) and packed.allowed is None
    padded_parts, padded_grads = grads(model, head, lambda: calrec_loss(model, head, batch, w))
    packed_parts, packed_grads = grads(model, head, lambda: packed_loss(model, head, packed, w))
    for k in padded_parts:
        torch.testing.assert_close(packed_parts[k], padded_parts[k], rtol=1e-5, atol=1e-5)
    for k in padded_grads:
        torch.testing.assert_close(packed_grads[k], padded_grads[k], rtol=1e-5, atol=1e-5, msg=k)
    with pytest.raises(ValueError, match="without masks needs the trie's BranchMasks"):
        pack(lean, length=96)


def test_packing_keeps_texts_whole_and_apart(setup):
    syn, tok = setup
    batch = step(syn, tok, "all", False, users=range(10))
    packed = pack(batch, length=64, rows=12)
    assert packed.ids.shape == (12, 64)
    mask = packed.attention_mask()[:, 0]
    doc = packed.doc
    seen = mask & (doc[:, :, None] >= 0)
    # a real token sees only earlier tokens of its own text
    r, i, j = seen.nonzero(as_tuple=True)
    assert bool((doc[r, i] == doc[r, j]).all() and (j <= i).all())
    for d, src in enumerate([*batch.user_ids[batch.user_mask.bool().any(1)], *batch.item_ids]):
        n = int((batch.user_mask if d < 10 else batch.item_mask)[d % 10].sum())
        assert torch.equal(packed.ids[doc == d], src[:n]) and torch.equal(packed.position[doc == d], torch.arange(n))
    with pytest.raises(ValueError, match="does not fit a packed row"):
        pack(batch, length=4)
    with pytest.raises(ValueError, match="more than the 1 asked for"):
        pack(batch, length=64, rows=1)


def packed_fit_curves(syn, tmp_path, runs: dict[str, dict], models: dict | None = None, **params) -> dict[str, list[float]]:
    from bench.models import FitContext, make_model

    curves = {}
    for name, extra in runs.items():
        m = make_model("calrec", {"backbone": "tiny", "stage2_steps": 4, "eval_every": 0, "lr": 3e-3, "batch_size": 4,
                                  "bf16": False, "device": "cpu", "lambda_tt": 0.5, "lambda_ut": 0.5,
                                  "inference": "likelihood", **params, **extra})
        ctx = FitContext(seed=0, workdir=tmp_path / name, valid_users=np.arange(4),
                         extra={"shared_cache": tmp_path / "shared"})
        m.fit(syn, ctx)
        curves[name] = [r["loss_total"] for r in ctx.curves if "loss_total" in r]
        if models is not None:
            models[name] = m
    return curves


@pytest.mark.parametrize("vocab", ["full", "trie"])
def test_a_calrec_fit_with_packed_steps_trains_as_the_padded_one(setup, tmp_path, vocab):
    """`pack: L` switches the training loop to packed steps (under the trie, masks from the branch
    table on the device): the curves match the padded fit's."""
    syn, _ = setup
    trie = {"vocab": "trie", "template": "compact", "nig_targets": "all",
            "nig_per": "item"} if vocab == "trie" else {}
    curves = packed_fit_curves(syn, tmp_path, {"padded": {"pack": 0}, "packed": {"pack": 1024}}, **trie)
    assert len(curves["padded"]) == 4
    np.testing.assert_allclose(curves["packed"], curves["padded"], rtol=1e-4)


def test_packed_steps_refuse_the_frozen_cache():
    from bench.models import make_model

    with pytest.raises(Exception, match="pack must be >= 0 and needs frozen_cache off"):
        make_model("calrec", {"backbone": "tiny", "pack": 256, "frozen_cache": True, "train_layers": 1, "examples": "epochs"})


@pytest.mark.slow
@pytest.mark.parametrize("path", ["packed", "frozen cache"])
def test_compiled_layers_train_as_eager_ones(setup, tmp_path, path):
    """`compile: true` (torch.compile per decoder layer, here inductor on the CPU) changes kernels, not
    what is trained: the fit's curve matches the eager one's (fp32, rtol 1e-4), on packed steps and on
    the CPU recipe's top layer over the frozen cache."""
    syn, _ = setup
    params = {"pack": 1024} if path == "packed" else {
        "train_layers": 1, "frozen_cache": True, "examples": "epochs", "vocab": "trie", "template": "compact",
        "nig_targets": "all", "nig_per": "item", "user_pooling": "next"}
    models = {}
    curves = packed_fit_curves(syn, tmp_path, {"eager": {}, "compiled": {"compile": True}}, models, **params)
    compiled = [getattr(layer, "_compiled_call_impl", None) is not None
                for name in ("eager", "compiled") for layer in models[name].model.model.layers]
    assert compiled == [False] * 2 + [True] * 2  # the switch reached the layers
    np.testing.assert_allclose(curves["compiled"], curves["eager"], rtol=1e-4)

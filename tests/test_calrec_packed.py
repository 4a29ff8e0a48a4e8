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


def step(syn, tok, nig_targets, trie, users=range(6)):
    b = PromptBuilder(tok, syn.item_text, max_history=4, template="compact")
    prompts = [b.user_prompt(syn.train[u][:-1], target=int(syn.train[u][-1])) for u in users]
    targets = [int(syn.train[u][-1]) for u in users]
    vocab = torch.tensor(sorted({t for i in range(len(syn.item_text)) for t in b.continuation(i)})) if trie else None
    return collate(prompts, [b.item_ids(t) for t in targets], targets, tok.pad_token_id, nig_targets,
                   item_logq=[-1.0 - 0.1 * k for k in range(len(targets))], vocab=vocab, trie=b.trie if trie else None)


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


def test_a_calrec_fit_with_packed_steps_trains_as_the_padded_one(setup, tmp_path):
    """`pack: L` switches the training loop to packed steps: the curves match the padded fit's."""
    from bench.models import FitContext, make_model

    syn, _ = setup
    curves = {}
    for pack_length in (0, 1024):
        m = make_model("calrec", {"backbone": "tiny", "stage2_steps": 4, "eval_every": 0, "lr": 3e-3, "batch_size": 4,
                                  "bf16": False, "device": "cpu", "lambda_tt": 0.5, "lambda_ut": 0.5, "pack": pack_length,
                                  "inference": "likelihood"})
        ctx = FitContext(seed=0, workdir=tmp_path / str(pack_length), valid_users=np.arange(4),
                         extra={"shared_cache": tmp_path / "shared"})
        m.fit(syn, ctx)
        curves[pack_length] = [r["loss_total"] for r in ctx.curves if "loss_total" in r]
    assert len(curves[0]) == 4
    np.testing.assert_allclose(curves[1024], curves[0], rtol=1e-4)
    with pytest.raises(Exception, match="pack must be >= 0 and needs frozen_cache off"):
        make_model("calrec", {"backbone": "tiny", "pack": 256, "frozen_cache": True, "train_layers": 1, "examples": "epochs"})

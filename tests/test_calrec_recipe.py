"""The recipe's generalisation switches: natural titles, weight decay on the matrices, residual
dropout in the trained layers. Each is off by default and, off, leaves the trained weights' key
(and so every stored weight) as it was."""
import numpy as np
import pytest
import torch

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.models import FitContext, make_model
from bench.split import leave_one_out
from calrec.backbone import residual_dropout, tiny_llama
from calrec.text import PromptBuilder, natural_title


@pytest.mark.parametrize("title, natural", [
    ("Usual Suspects, The", "The Usual Suspects"), ("Postino, Il", "Il Postino"), ("Paris, Texas", "Paris, Texas"),
    ("Blue Angel, The (Blaue Engel, Der)", "The Blue Angel (Der Blaue Engel)"),
    ("Star Maker, The (Uomo delle stelle, L')", "The Star Maker (L'Uomo delle stelle)"), ("Toy Story", "Toy Story")])
def test_natural_titles_restore_the_inverted_article(title, natural):
    assert natural_title(title) == natural


class _Tok:
    """A character tokenizer: enough to see what text the builder renders."""
    eos_token_id = 0

    def __call__(self, s, add_special_tokens=False):
        return type("Enc", (), {"input_ids": [ord(c) for c in s]})()


def test_natural_titles_open_each_compact_line_with_a_space_and_change_nothing_else():
    items = [{"Title": "Net, The", "Year": "1995"}, {"Title": "Heat", "Year": "1995"}]
    plain = PromptBuilder(_Tok(), items, "movie", template="compact", item_fields=["Title"])
    nat = PromptBuilder(_Tok(), items, "movie", template="compact", item_fields=["Title"], natural_titles=True)
    assert plain.texts == ["Net, The", "Heat"] and nat.texts == [" The Net", " Heat"]
    assert nat.prefix == plain.prefix and nat.end == plain.end


def _fit(tmp_path, **over):
    syn = leave_one_out(load_dataset("synthetic", n_users=40, n_items=30, seed=2))
    params = {"backbone": "tiny", "template": "compact", "nig_targets": "all", "vocab": "trie", "examples": "epochs",
              "stage2_steps": 3, "eval_every": 3, "lr": 3e-3, "batch_size": 8, "valid_users": 8, "bf16": False,
              "device": "cpu", "threads": 1, "inference": "likelihood", "user_pooling": "next", **over}
    m = make_model("calrec", params)
    m.fit(syn, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(syn.n_users), extra={"shared_cache": tmp_path}))
    return m


def test_the_switches_off_keep_the_weights_key_and_on_enter_it(tmp_path):
    base = make_model("calrec", {"backbone": "tiny"})._training_key(0)
    assert not {"natural_titles", "weight_decay", "dropout"} & set(base)
    on = make_model("calrec", {"backbone": "tiny", "natural_titles": True, "weight_decay": 0.1, "dropout": 0.1})
    assert {"natural_titles", "weight_decay", "dropout"} <= set(on._training_key(0))


def test_the_switches_train_and_rank(tmp_path):
    m = _fit(tmp_path, natural_titles=True, weight_decay=0.1, dropout=0.2, train_layers=1, frozen_cache=True)
    assert np.isfinite(m.measured["valid_nll"])
    syn = m.split
    scores = m.predict(syn.inputs("test", np.arange(4)), np.arange(4))
    assert scores.shape == (4, syn.n_items) and np.isfinite(scores).all()


def test_residual_dropout_acts_in_training_mode_only_and_only_on_the_trained_layers():
    model = tiny_llama(50, layers=2, seed=0)
    residual_dropout(model, 0.5, top_layers=1)
    ids = torch.arange(1, 9).view(1, 8)
    model.eval()
    a, b = model(ids).logits, model(ids).logits
    assert torch.equal(a, b)  # eval: deterministic
    model.train()
    torch.manual_seed(0)
    c = model(ids).logits
    assert not torch.allclose(a, c)  # train: the hooks drop
    assert not model.model.layers[0].mlp._forward_hooks and model.model.layers[1].mlp._forward_hooks


@pytest.mark.parametrize("bad", [{"dropout": 1.0}, {"dropout": -0.1}, {"weight_decay": -1.0}])
def test_out_of_range_switches_are_refused_by_name(bad):
    with pytest.raises(BenchError, match=next(iter(bad))):
        make_model("calrec", {"backbone": "tiny", **bad})

"""Window tilings (`window_tilings`): the epochs' windows shifted in turn, every item still a label each
epoch, each tiling's frozen-layer cache its own; one tiling is the windows as they always were."""
import dataclasses

import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.models import FitContext, make_model
from bench.split import leave_one_out
from bench.text import render_compact
from calrec.backbone import tiny_llama, tiny_tokenizer
from calrec.frozen import cache_key, frozen_states
from calrec.text import PromptBuilder
from calrec.train import Domain, Examples, StageConfig, epoch_positions, tiling_shifts



def calrec_params(**over):
    return {"backbone": "tiny", "template": "compact", "nig_targets": "all", "vocab": "trie", "examples": "epochs",
            "stage2_steps": 4, "eval_every": 2, "lr": 3e-3, "batch_size": 8, "valid_users": 8, "bf16": False,
            "device": "cpu", "threads": 1, "inference": "likelihood", "user_pooling": "next", **over}


def fit(split, folder, **params):
    m = make_model("calrec", calrec_params(**params))
    m.fit(split, FitContext(seed=0, workdir=folder, valid_users=np.arange(split.n_users), extra={"shared_cache": folder}))
    return m


@pytest.fixture(scope="module")
def syn():
    return leave_one_out(load_dataset("synthetic", n_users=40, n_items=30, seed=5))


@pytest.fixture(scope="module")
def builder(syn):
    tok = tiny_tokenizer([render_compact(a) for a in syn.item_text])
    return PromptBuilder(tok, syn.item_text, "movie", 5, 48, 768, "compact")


ONE = StageConfig(steps=1, examples="epochs", nig_targets="all")


def test_every_tiling_labels_every_item_and_one_tiling_is_the_windows_as_they_were(syn):
    window = 6
    three = dataclasses.replace(ONE, window_tilings=3)
    assert tiling_shifts(ONE, window) == [0] and tiling_shifts(three, window) == [0, 2, 4]
    as_they_were = [[u, t] for u, seq in enumerate(syn.train) if len(seq) >= 2 for t in range(len(seq) - 1, -1, -window)]
    assert epoch_positions(syn.train, ONE, window).tolist() == as_they_were
    assert epoch_positions(syn.train, three, window, 0).tolist() == as_they_were
    for shift in (2, 4):
        pos = epoch_positions(syn.train, three, window, shift)
        assert sorted(map(tuple, pos.tolist())) != sorted(map(tuple, as_they_were))
        for u, seq in enumerate(syn.train):
            ends = pos[pos[:, 0] == u, 1]
            labelled = set().union(*(range(max(0, e - window + 1), e + 1) for e in ends))
            assert labelled == (set(range(len(seq))) if len(seq) >= 2 else set())


def test_epochs_take_the_tilings_in_turn_each_whole(syn, builder):
    s = Examples(Domain("syn", syn, builder, 0), dataclasses.replace(ONE, window_tilings=2), np.random.default_rng(0))
    sizes = [len(t) for t in s.tilings]
    for epoch, n in enumerate(sizes * 2):  # four epochs, each drawn whole
        got = s._positions(n)
        k = epoch % 2
        assert {p[3] for p in got} == {k}
        assert sorted((u, t) for u, t, _, _ in got) == sorted(map(tuple, s.tilings[k].tolist()))
    one = Examples(Domain("syn", syn, builder, 0), ONE, np.random.default_rng(0))
    assert len(one.tilings) == 1 and {p[3] for p in one._positions(3 * len(one.epoch))} == {0}


def test_passes_count_each_tiling_by_its_own_size(syn, builder):
    s = Examples(Domain("syn", syn, builder, 0), dataclasses.replace(ONE, window_tilings=3), np.random.default_rng(0))
    sizes = [len(t) for t in s.tilings]
    assert len(set(sizes)) > 1 and s.epochs == 0  # shifted tilings add the window ending last
    s._positions(sizes[0])
    assert s.epochs == 1
    s._positions(sizes[1] // 2)
    assert s.epochs == pytest.approx(1 + (sizes[1] // 2) / sizes[1])
    s._positions(sizes[1] - sizes[1] // 2 + sizes[2])
    assert s.epochs == 3


def test_each_tiling_reads_its_own_cached_windows(syn, builder):
    model = tiny_llama(len(builder.tok), layers=2, heads=4, kv_heads=2, seed=0).eval()
    cfg = dataclasses.replace(ONE, window_tilings=2, bf16=False)
    window = builder.max_history + 1
    states = []
    for shift in tiling_shifts(cfg, window):
        positions = epoch_positions(syn.train, cfg, window, shift)
        key = cache_key(builder, positions, syn.version, 1, False, "tiny", None)
        states.append(frozen_states(model, builder, syn.train, positions, 1, builder.tok.pad_token_id, False, "cpu", key,
                                    None, None))
    s = Examples(Domain("syn", syn, builder, 0, tuple(states)), cfg, np.random.default_rng(1))
    drawn = s._positions(sum(len(t) for t in s.tilings))
    assert {p[3] for p in drawn} == {0, 1}
    for u, t, j, k in drawn:
        assert states[k].prompts[j].ids == builder.user_prompt(syn.train[u][:t], target=int(syn.train[u][t])).ids


def test_tilings_train_through_the_model_with_a_cache_each(syn, tmp_path):
    one = fit(syn, tmp_path / "one", train_layers=1, frozen_cache=True, nig_per="item")
    two = fit(syn, tmp_path / "two", train_layers=1, frozen_cache=True, nig_per="item", window_tilings=2)
    entries = lambda m, d: len(list((tmp_path / d / "calrec-frozen").glob("*.pt")))  # noqa: E731
    assert entries(two, "two") == entries(one, "one") + 1  # a second tiling's windows
    assert "window_tilings" not in one._training_key(0) and two._training_key(0)["window_tilings"] == 2


@pytest.mark.parametrize("bad", [{"window_tilings": 0}, {"window_tilings": 2, "examples": "sampled"},
                                 {"window_tilings": 2, "nig_targets": "last"}, {"window_tilings": 1.5}])
def test_window_tilings_is_refused_where_it_means_nothing(bad):
    with pytest.raises(BenchError, match="window_tilings"):
        make_model("calrec", calrec_params(**bad))

from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.dropout import FastDropout
from baselines.neural import Block, SequenceEncoder, ema_fn, length_batches, pad_right, windows
from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.evaluate import metrics_from_ranks
from bench.models import FitContext, make_model
from bench.execute.scoring import score_users
from bench.split import leave_one_out


@pytest.fixture(scope="module")
def syn():
    return leave_one_out(load_dataset("synthetic", n_users=200, n_items=80, seed=5))


def ndcg10(model, split):
    users = np.arange(split.n_users)
    r = score_users(model, split, users, "test", True, 256, "t")
    return metrics_from_ranks(r, [10])["NDCG@10"].mean()


def fit(name, params, split, tmp_path, seed=0):
    m = make_model(name, params)
    m.fit(split, FitContext(seed=seed, workdir=Path(tmp_path), valid_users=np.arange(split.n_users)))
    return m


def test_pad_right_left_aligns_and_truncates():
    t = pad_right([np.array([0, 1, 2]), np.array([5])], max_len=2, extra=[99])
    assert t.tolist() == [[3, 99], [6, 99]]
    assert pad_right([np.array([4]), np.array([1, 2])], max_len=5).tolist() == [[5, 0], [2, 3]]


@pytest.mark.parametrize("stride", [None, 1, 2, 3])
def test_windows_train_every_transition_once(stride):
    seqs = [np.arange(10), np.arange(100, 103), np.arange(200, 201), np.arange(300, 305)]
    pieces, targets = windows(seqs, 4, stride)
    assert all(2 <= len(p) <= 4 for p in pieces) and len(pieces) == len(targets)
    pairs = sorted((int(p[i]), int(p[i + 1])) for p, n in zip(pieces, targets) for i in range(len(p) - 1 - n, len(p) - 1))
    expected = sorted((int(s[i]), int(s[i + 1])) for s in seqs for i in range(len(s) - 1))
    assert pairs == expected
    # each trained target sees at least width - stride items, unless its history is shorter
    for p, n in zip(pieces, targets):
        assert len(p) - n >= min(4 - (stride or 3), p[0] % 100 + len(p) - n)


def test_sasrec_loss_trains_only_each_pieces_last_targets():
    torch.manual_seed(0)
    m = make_model("sasrec", {"hidden": 8, "max_len": 6, "all_windows": True, "stride": 2, "dropout": 0.0})
    m.n_items, m.net = 10, SequenceEncoder(11, 7, 8, 1, 1, 0.0, causal=True).eval()
    pieces = [np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7])]
    with torch.no_grad():
        h = m.net(torch.tensor([[1, 2, 3, 4], [6, 7, 0, 0]]))
        per_pos = torch.nn.functional.cross_entropy(m.item_logits(h.reshape(-1, 8)), torch.tensor([1, 2, 3, 4, 6, 7, 0, 0]),
                                                    reduction="none").view(2, 4)
        got = m.loss((pieces, torch.tensor([1, 2])), None)
        torch.testing.assert_close(got, (per_pos[0, 3] + per_pos[1, 0] + per_pos[1, 1]) / 3)
        torch.testing.assert_close(m.loss((pieces, torch.tensor([4, 2])), None), per_pos[[0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 0, 1]].mean())


def test_stride_needs_windows():
    with pytest.raises(BenchError, match="stride 5 needs all_windows"):
        make_model("sasrec", {"stride": 5})
    with pytest.raises(BenchError, match="bert4rec: stride"):
        make_model("bert4rec", {"all_windows": True, "stride": 5})


def test_length_batches_group_similar_lengths_and_keep_every_index():
    lengths = np.random.default_rng(0).integers(1, 200, size=103)
    batches = length_batches(lengths, 10, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert sum(lengths[b].max() for b in batches) < 0.6 * len(batches) * lengths.max()


def _trained_batch_lengths(name, params, split, tmp_path, monkeypatch) -> list[list[int]]:
    """The history lengths of each batch a model's first epoch trains on."""
    cls = type(make_model(name, params))
    seen, loss = [], cls.loss
    monkeypatch.setattr(cls, "loss", lambda self, batch, rng: seen.append([len(p) for p in batch[0]]) or loss(self, batch, rng))
    fit(name, {"epochs": 1, "hidden": 16, "batch_size": 16, **params}, split, tmp_path)
    return seen


def test_bert4rec_trains_on_random_batches_and_sasrec_on_length_buckets(syn, tmp_path, monkeypatch):
    # Bucketed batches cover disjoint length ranges; random ones overlap. Bucketing cost BERT4Rec
    # on ML-100k (test Recall@10 0.145 vs 0.175 at seed 0), so it draws uniform batches by default.
    def overlapping(batches):
        spans = sorted((min(b), max(b)) for b in batches)
        return sum(hi > lo for (_, hi), (lo, _) in zip(spans, spans[1:]))

    assert overlapping(_trained_batch_lengths("sasrec", {}, syn, tmp_path, monkeypatch)) == 0
    assert overlapping(_trained_batch_lengths("bert4rec", {}, syn, tmp_path, monkeypatch)) > 5
    assert overlapping(_trained_batch_lengths("bert4rec", {"batching": "length"}, syn, tmp_path, monkeypatch)) == 0
    with pytest.raises(BenchError, match="batching 'sorted'"):
        make_model("sasrec", {"batching": "sorted"})


@pytest.mark.parametrize("layout", ["pre-ln", "recbole"])
@pytest.mark.parametrize("causal", [True, False])
def test_padding_and_last_only_do_not_change_the_final_state(causal, layout):
    torch.manual_seed(0)
    enc = SequenceEncoder(20, 10, 16, 2, 2, 0.0, causal=causal, attn_dropout=0.5, layout=layout).eval()
    alone = torch.tensor([[3, 4, 5]])
    batch = torch.tensor([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]])
    with torch.no_grad():
        ref = enc(alone)[:, -1]
        torch.testing.assert_close(enc(batch)[:1, 2], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(enc(batch, last_only=True)[:1], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(enc(batch, last_only=True)[1:], enc(batch)[1:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["pre-ln", "recbole"])
def test_causal_state_ignores_future_items(layout):
    torch.manual_seed(0)
    enc = SequenceEncoder(20, 10, 16, 1, 1, 0.0, causal=True, layout=layout).eval()
    with torch.no_grad():
        a = enc(torch.tensor([[3, 4, 5, 6]]))[:, 1]
        b = enc(torch.tensor([[3, 4, 9, 9]]))[:, 1]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean(p):
    x = torch.ones(400_000)
    drop = FastDropout(p)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert torch.equal(drop.eval()(x), x) and torch.equal(FastDropout(0.0)(x), x)
    with pytest.raises(ValueError, match="not in"):
        FastDropout(1.0)


def test_fast_dropout_follows_torch_seed():
    torch.manual_seed(3)
    a = FastDropout(0.5)(torch.ones(100))
    torch.manual_seed(3)
    assert torch.equal(FastDropout(0.5)(torch.ones(100)), a)
    assert not torch.equal(FastDropout(0.5)(torch.ones(100)), a)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_with_dropout_equals_sdpa_when_nothing_is_dropped(causal, monkeypatch):
    """The training path with attention dropout computes attention by hand: with an all-keep mask it
    must give SDPA's result, causal and with a padding mask."""
    torch.manual_seed(0)
    block = Block(16, 2, 0.0, attn_dropout=0.5).train()
    x = torch.randn(3, 6, 16)
    mask = None if causal else torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])[:, None, :]
    monkeypatch.setattr(block.attn_drop, "mask", lambda shape, dtype: torch.ones(shape, dtype=dtype))
    by_hand = block(x, mask)
    block.attn_drop.p = 0.0  # now SDPA
    torch.testing.assert_close(by_hand, block(x, mask), atol=1e-5, rtol=1e-5)


def test_ema_warms_up_then_keeps_its_decay():
    avg, cur = [torch.zeros(2)], [torch.ones(2)]
    ema_fn(0.99)(avg, cur, torch.tensor(0))  # warm-up: decay 1/10, mostly the current weights
    torch.testing.assert_close(avg[0], torch.full((2,), 0.9))
    avg = [torch.zeros(2)]
    ema_fn(0.99)(avg, cur, torch.tensor(10_000))
    torch.testing.assert_close(avg[0], torch.full((2,), 0.01))


SASREC_FAST = {"epochs": 30, "all_windows": True, "batch_size": 32}


@pytest.mark.parametrize("name, extra", [
    ("sasrec", SASREC_FAST),
    ("sasrec", {**SASREC_FAST, "layout": "recbole", "heads": 2, "attn_dropout": 0.1, "dropout": 0.1, "stride": 5}),
    ("sasrec", {**SASREC_FAST, "ema": 0.99}),
    # BERT4Rec's cloze objective converges slowly: it gets more epochs and a higher mask rate.
    ("bert4rec", {"epochs": 100, "mask_prob": 0.4}),
])
def test_sequence_models_beat_popularity_on_sequential_data(name, extra, syn, tmp_path):
    pop = fit("pop", {}, syn, tmp_path)
    m = fit(name, {"hidden": 32, "max_len": 20, "patience": 100, "lr": 3e-3, **extra}, syn, tmp_path)
    assert ndcg10(m, syn) > ndcg10(pop, syn) + 0.05
    assert m.info()["best_valid_NDCG@10"] > 0


def test_unknown_layout_is_refused():
    with pytest.raises(BenchError, match="layout 'post'"):
        make_model("sasrec", {"layout": "post"})


def test_sasrec_is_seeded(syn, tmp_path):
    p = {"hidden": 16, "max_len": 10, "epochs": 2, "patience": 5}
    a, b = fit("sasrec", p, syn, tmp_path), fit("sasrec", p, syn, tmp_path)
    h = syn.inputs("test", np.arange(5))
    np.testing.assert_array_equal(a.predict(h, np.arange(5)), b.predict(h, np.arange(5)))


def test_itemknn_and_bm25_shapes_and_signal(syn, tmp_path):
    for name in ("itemknn", "bm25-text"):
        m = fit(name, {}, syn, tmp_path)
        s = m.predict(syn.inputs("test", np.arange(3)), np.arange(3))
        assert s.shape == (3, syn.n_items) and s.dtype == np.float32
    assert ndcg10(fit("itemknn", {}, syn, tmp_path), syn) > ndcg10(fit("pop", {}, syn, tmp_path), syn)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_sequence_models_run_where_told_and_score_alike_on_a_gpu(name, syn, tmp_path):
    """device: auto takes the GPU where there is one; a model trained on the CPU scores the same
    users within float tolerance after moving to the GPU (the GPU half needs a GPU machine)."""
    m = fit(name, {"hidden": 16, "max_len": 10, "epochs": 2, "patience": 5, "device": "cpu"}, syn, tmp_path)
    assert m.info()["device"] == "cpu"
    assert make_model(name, {}).device == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        pytest.skip("no GPU here: the CPU-vs-GPU comparison runs on a GPU machine")
    users = np.arange(20)
    h = syn.inputs("test", users)
    on_cpu = m.predict(h, users)
    m.net.to("cuda")
    m.device = "cuda"
    np.testing.assert_allclose(m.predict(h, users), on_cpu, rtol=1e-4, atol=1e-4)


class Stopped(BaseException):
    """A kill: not an error a runner reports and goes on from (those are Exceptions)."""


@pytest.mark.parametrize("name, extra", [
    ("sasrec", {"dropout": 0.3, "attn_dropout": 0.2, "ema": 0.9, "all_windows": True}),
    ("bert4rec", {"dropout": 0.3}),
])
def test_a_stopped_training_resumes_at_its_next_epoch_and_ends_as_an_unstopped_one(name, extra, syn, tmp_path, monkeypatch):
    import baselines.neural as neural

    p = {"hidden": 16, "max_len": 10, "epochs": 5, "patience": 100, **extra}

    def run(workdir, key):
        m = make_model(name, p)
        ctx = FitContext(seed=3, workdir=workdir, valid_users=np.arange(50), extra={"checkpoint_key": key})
        m.fit(syn, ctx)
        return m, [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in ctx.curves]

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole, whole_curves = run(tmp_path / "a", "k")
    assert not (tmp_path / "a/train_state.pt").exists()  # removed once training ends
    real, calls = neural.validation_ndcg10, []

    def stop_at_third(*args):
        calls.append(1)
        if len(calls) == 3:  # epoch 3, after epochs 1-2 were saved
            raise Stopped
        return real(*args)

    monkeypatch.setattr(neural, "validation_ndcg10", stop_at_third)
    with pytest.raises(Stopped):
        run(tmp_path / "b", "k")
    monkeypatch.setattr(neural, "validation_ndcg10", real)
    assert (tmp_path / "b/train_state.pt").exists()
    resumed, resumed_curves = run(tmp_path / "b", "k")
    assert resumed.info()["resumed_at_epoch"] == 3 and whole.info()["resumed_at_epoch"] is None
    assert resumed.info()["epochs_run"] == 5 and resumed_curves == whole_curves
    for k, v in whole.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k
    # A state saved under another key (other config or code) is never resumed from.
    monkeypatch.setattr(neural, "validation_ndcg10", stop_at_third)
    calls.clear()
    with pytest.raises(Stopped):
        run(tmp_path / "b", "k")
    monkeypatch.setattr(neural, "validation_ndcg10", real)
    fresh, _ = run(tmp_path / "b", "other")
    assert fresh.info()["resumed_at_epoch"] is None


def test_bench_run_resumes_a_killed_cell_from_its_last_epoch(tmp_path, monkeypatch, capsys):
    import json

    import baselines.neural as neural
    from bench.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text("seeds: [0]\nks: [10]\ndatasets:\n  syn: {spec: synthetic, n_users: 60, n_items: 30, seed: 1}\n"
                     "models:\n  sasrec: {model: sasrec, params: {hidden: 16, max_len: 10, epochs: 4, patience: 10}}\n")
    real, calls = neural.validation_ndcg10, []

    def killed_at_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise Stopped
        return real(*args)

    monkeypatch.setattr(neural, "validation_ndcg10", killed_at_third)
    with pytest.raises(Stopped):
        main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")])
    monkeypatch.setattr(neural, "validation_ndcg10", real)
    assert not (tmp_path / "r/runs/s/syn/sasrec/seed0").exists()
    capsys.readouterr()
    assert main(["plan", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 0
    assert "to run: not run yet; resumes from its checkpoint (2 of 4 epochs," in capsys.readouterr().out
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 0
    rec = json.loads((tmp_path / "r/runs/s/syn/sasrec/seed0/run.json").read_text())
    assert rec["model_info"]["resumed_at_epoch"] == 3 and rec["model_info"]["epochs_run"] == 4
    assert rec["fit_seconds"] >= rec["model_info"]["fit_seconds_before_resume"] > 0
    assert not any((tmp_path / "r/cache/s/syn/sasrec/seed0").iterdir())  # checkpoint and progress removed

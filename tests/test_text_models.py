"""The text-aware baselines: LLM item vectors (cached, checksummed, rebuilt when damaged) and SASRec
over them, which must learn a planted sequence like plain SASRec does."""
from pathlib import Path

import numpy as np
import pytest

from baselines.llm_items import item_texts, item_vectors
from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.evaluate import metrics_from_ranks
from bench.execute.scoring import score_users
from bench.models import FitContext, make_model
from bench.split import leave_one_out


@pytest.fixture(scope="module")
def syn():
    return leave_one_out(load_dataset("synthetic", n_users=200, n_items=80, seed=5))


def ndcg10(model, split):
    r = score_users(model, split, np.arange(split.n_users), "test", True, 256, "t")
    return metrics_from_ranks(r, [10])["NDCG@10"].mean()


def fit(name, params, split, tmp_path):
    m = make_model(name, params)
    m.fit(split, FitContext(seed=0, workdir=Path(tmp_path), valid_users=np.arange(split.n_users),
                            extra={"shared_cache": Path(tmp_path) / "shared"}))
    return m


def test_item_vectors_are_cached_checked_and_rebuilt_when_damaged(syn, tmp_path, capsys):
    first = item_vectors(syn, "tiny", tmp_path)
    assert first.shape[0] == syn.n_items and np.isfinite(first).all()
    (entry,) = (tmp_path / "llm-item-vectors").glob("*.npy")
    assert item_vectors(syn, "tiny", tmp_path).tobytes() == first.tobytes()  # read back
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF  # one weight's bytes changed inside a valid .npy
    entry.write_bytes(bytes(data))
    capsys.readouterr()
    again = item_vectors(syn, "tiny", tmp_path)
    said = capsys.readouterr()
    assert "checksum does not match its bytes" in said.out + said.err
    np.testing.assert_array_equal(again, first)  # rebuilt, not the damaged bytes
    assert entry.read_bytes() != bytes(data)


def test_item_texts_restore_articles():
    split = leave_one_out(load_dataset("synthetic", n_users=20, n_items=10, seed=1))
    split.item_text[0] = {"Title": "Net, The", "Category": "x"}
    assert item_texts(split)[0] == "The Net"


@pytest.mark.parametrize("fusion", ["add", "init"])
def test_llm_sasrec_beats_popularity_on_sequential_data(fusion, syn, tmp_path):
    pop = fit("pop", {}, syn, tmp_path)
    m = fit("llm-sasrec", {"backbone": "tiny", "fusion": fusion, "hidden": 32, "max_len": 20, "patience": 100,
                           "lr": 3e-3, "epochs": 30, "all_windows": True, "batch_size": 32}, syn, tmp_path)
    assert ndcg10(m, syn) > ndcg10(pop, syn) + 0.05
    assert m.info()["fusion"] == fusion


@pytest.mark.parametrize("ids", [False, True])
def test_unisrec_pretrains_across_domains_and_beats_popularity(ids, syn, tmp_path):
    pop = fit("pop", {}, syn, tmp_path)
    other = {"spec": "synthetic", "n_users": 120, "n_items": 50, "seed": 8}
    m = fit("unisrec", {"backbone": "tiny", "ids": ids, "hidden": 32, "max_len": 20, "patience": 100, "lr": 3e-3,
                        "epochs": 30, "all_windows": True, "batch_size": 32, "experts": 4,
                        "pretrain": {"datasets": [other, "synthetic"], "steps": 60, "batch_size": 32}}, syn, tmp_path)
    assert ndcg10(m, syn) > ndcg10(pop, syn) + 0.05
    info = m.info()
    assert info["pretrain_domains"] == ["synthetic", "synthetic"] and np.isfinite(info["pretrain_last_loss"])
    frozen = [n for n, p in m.net.named_parameters() if not p.requires_grad]
    assert frozen and all(not n.startswith("item.") for n in frozen)  # the encoder is fixed, the adaptor trains


def test_unknown_fusion_is_refused():
    with pytest.raises(BenchError, match="fusion"):
        make_model("llm-sasrec", {"fusion": "concat"})


def test_residual_kmeans_gives_every_item_its_own_id():
    from baselines.semantic_ids import residual_kmeans

    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(size=(30, 8)), np.repeat(rng.normal(size=(1, 8)), 5, 0)])  # 5 identical texts
    ids = residual_kmeans(vectors.astype(np.float32), levels=2, codes=4, seed=0)
    assert ids.shape == (35, 3) and ids[:, :2].max() < 4
    assert len({tuple(r) for r in ids}) == 35  # the collision code tells apart what k-means cannot
    assert len(set(ids[30:, 2])) == 5 and (ids[30:, :2] == ids[30, :2]).all()  # one tuple, five collision codes


def test_the_code_decoder_is_a_distribution_over_the_catalog_item_by_item_or_all_at_once():
    import torch

    from baselines.semantic_ids import CodeDecoder, residual_kmeans

    ids = torch.from_numpy(residual_kmeans(np.random.default_rng(1).normal(size=(40, 6)), 2, 3, seed=0))
    dec = CodeDecoder(ids, [int(ids[:, j].max()) + 1 for j in range(3)], hidden=16)
    state = torch.randn(5, 16)
    with torch.no_grad():
        every = dec.all_items(state)
        one_by_one = dec.log_prob(state.repeat_interleave(40, 0), torch.arange(40).repeat(5)).reshape(5, 40)
    np.testing.assert_allclose(every.exp().sum(1).numpy(), 1.0, rtol=1e-5)  # constrained: only catalog IDs
    np.testing.assert_allclose(every.numpy(), one_by_one.numpy(), atol=1e-5)


def test_semantic_ids_beat_popularity_on_sequential_data(syn, tmp_path):
    pop = fit("pop", {}, syn, tmp_path)
    m = fit("semantic-ids", {"backbone": "tiny", "levels": 2, "codes": 8, "hidden": 32, "max_len": 20, "patience": 100,
                             "lr": 3e-3, "epochs": 30, "all_windows": True, "batch_size": 32}, syn, tmp_path)
    assert ndcg10(m, syn) > ndcg10(pop, syn) + 0.05
    info = m.info()
    assert info["code_sizes"][:2] == [8, 8] and info["items_with_a_collision_code"] >= 0


def test_semantic_ids_refuse_a_single_code():
    with pytest.raises(BenchError, match="codes"):
        make_model("semantic-ids", {"codes": 1})

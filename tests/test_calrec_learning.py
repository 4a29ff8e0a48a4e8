"""CALRec's learning path: query normalisation, all-item labels, catalog vocabulary, likelihood
scoring, fills, and an end-to-end test that a tiny model learns a text-predictable next item."""
import math

import numpy as np
import pytest
import torch

from bench.datasets.base import Interactions
from bench.errors import BenchError
from bench.evaluate import metrics_from_ranks
from bench.models import FitContext, make_model
from bench.execute.scoring import score_users
from bench.split import leave_one_out
from bench.text import BM25Catalog, render_compact
from calrec.backbone import tiny_llama, tiny_tokenizer
from calrec.generate import _softmax_attend, continuation_logprobs
from calrec.retrieve import fill_list
from calrec.text import PromptBuilder
from calrec.towers import collate, hidden_states, token_logprobs
from calrec.train import StageConfig, epoch_positions, lr_factor

MOVIES = [("Unforgiven", "1992", "Western"), ("Year of the Horse", "1997", "Documentary"),
          ("Man of the Year", "1995", "Documentary"), ("My Favorite Year", "1982", "Comedy"),
          ("Titanic", "1997", "Drama"), ("Heat", "1995", "Action")]


def movie_text():
    return [{"Title": t, "Year": y, "Genres": g} for t, y, g in MOVIES]


def test_a_right_title_with_a_wrong_year_finds_its_film():
    """Field names ("Year:") are normalised out of queries as out of the corpus; left in, "year"
    is a rare title word and the query retrieves 'Year of the Horse'."""
    cat = BM25Catalog(movie_text())
    assert cat.top("Title: Unforgiven, Year: 1997, Genres: Western", 1)[0] == 0
    assert cat.top("Title: Heat, Year: 1982, Genres: Action", 1)[0] == 5
    assert cat.tokens("Title: Heat, Year: 1997") == cat.tokens("Heat, 1997")
    assert cat.top("Year of the Horse", 1)[0] == 1  # a title word that is also a field name still counts


def test_compact_rendering():
    assert render_compact({"Title": "Heat", "Year": "1995", "Genres": "Action"}, ["Title", "Year"]) == "Heat (1995)"
    assert render_compact({"Title": "Heat", "Year": " "}) == "Heat (unknown)"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer([render_compact(a) for a in movie_text()] + [" ".join(a.values()) for a in movie_text()])


@pytest.mark.parametrize("template", ["paper", "compact"])
def test_all_item_labels_cover_each_item_text_and_its_end_exactly(tok, template):
    b = PromptBuilder(tok, movie_text(), "movie", template=template)
    p = b.user_prompt(np.array([4, 0, 5]), target=2)
    batch = collate([p], [b.item_ids(2)], [2], tok.pad_token_id, nig_targets="all")
    labelled = [int(t) for t in batch.user_ids[0][batch.label_span[0]]]
    want = b.items[4] + b.newline + b.items[0] + b.newline + b.items[5] + b.newline + b.continuation(2)
    assert labelled == want
    last = collate([p], [b.item_ids(2)], [2], tok.pad_token_id, nig_targets="last")
    assert [int(t) for t in last.user_ids[0][last.label_span[0]]] == b.continuation(2)
    assert p.ids[p.next_pos + 1 : p.target[1]] == b.continuation(2)  # next_pos predicts the target's first token
    text_only = [int(t) for t in batch.user_ids[0][batch.items_span[0]]]
    assert text_only == b.items[4] + b.items[0] + b.items[5]


def test_catalog_vocabulary_is_a_softmax_over_those_tokens(tok):
    torch.manual_seed(0)
    model = tiny_llama(len(tok)).eval()
    b = PromptBuilder(tok, movie_text(), "movie", template="compact")
    vocab = torch.tensor(b.vocab)
    batch = collate([b.user_prompt(np.array([0, 1]), 4)], [b.item_ids(4)], [4], tok.pad_token_id, "all", vocab=vocab)
    with torch.no_grad():
        got = token_logprobs(model, hidden_states(model, batch.user_ids, batch.user_mask), batch.user_ids,
                             batch.label_span, batch.vocab)
        logits = model(input_ids=batch.user_ids).logits[0]
    pos = torch.nonzero(batch.label_span[0]).squeeze(1)
    want = torch.log_softmax(logits[pos - 1][:, vocab], -1)[torch.arange(len(pos)), torch.searchsorted(vocab, batch.user_ids[0, pos])]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert len(b.vocab) < len(tok) and set(b.end) <= set(b.vocab)


def test_continuation_logprobs_match_a_full_forward(tok):
    """Candidates scored on one shared prompt K/V (rows leaving as they finish) equal a plain
    forward over prompt + candidate, with and without a restricted vocabulary."""
    model = tiny_llama(len(tok), heads=4, kv_heads=2).eval()
    b = PromptBuilder(tok, movie_text(), "movie", template="compact")
    prompts = [b.user_prompt(np.array([0, 1])).ids, b.user_prompt(np.array([5])).ids]
    conts = [[b.continuation(i) for i in (2, 3, 4)], [b.continuation(i) for i in (1, 0)]]
    for vocab in (None, b.vocab):
        got = continuation_logprobs(model, prompts, conts, tok.pad_token_id, vocab)
        for p, cs, g in zip(prompts, conts, got):
            assert len(g) == len(cs)
            for c, value in zip(cs, g):
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : -1].float()
                if vocab is not None:
                    mask = torch.full((logits.shape[1],), float("-inf"))
                    mask[vocab] = 0
                    logits = logits + mask
                want = float(torch.log_softmax(logits, -1)[torch.arange(len(c)), c].sum())
                assert value == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_and_plain_prefix_attention_agree(dtype):
    """The CPU's fused attention kernel and the plain ops (other devices) give the same output and
    log-sum-exp, padding positions (-inf bias) included."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g).to(dtype) for n in (5, 7, 7))
    bias = torch.zeros(2, 7).masked_fill(torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0] * 7]).bool(), float("-inf"))
    bias = bias[:, None, None, :]
    (o1, l1), (o2, l2) = (_softmax_attend(q, k, v, bias, fused=f) for f in (True, False))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(o1.float(), o2.float(), atol=tol) and torch.allclose(l1, l2, atol=tol)
    s = (q.float() @ k.float().transpose(-1, -2)) + bias
    assert torch.allclose(l2, torch.logsumexp(s, -1), atol=tol)


def test_fill_keeps_the_head_and_skips_taken_and_history_items():
    assert fill_list([3, 1], np.array([0.9, 0.1, 0.8, 0.0, 0.5]), 4, exclude={0}) == [3, 1, 2, 4]
    assert fill_list([3, 1], np.zeros(5), 1, exclude=set()) == [3]


def test_epochs_label_every_training_item_once():
    train = [np.arange(7), np.arange(3), np.arange(1)]
    pairs = epoch_positions(train, StageConfig(1, nig_targets="all"), window=3)
    labelled = {(int(u), t) for u, end in pairs for t in range(max(0, end - 2), end + 1)}  # window items are labels
    assert sorted(labelled) == sorted({(0, t) for t in range(7)} | {(1, t) for t in range(3)})
    assert len(labelled) == sum(min(3, e + 1) for _, e in pairs)  # no item labelled twice
    last = epoch_positions(train, StageConfig(1, nig_targets="last", target="random"), window=3)
    assert len(last) == 6 + 2  # every (user, position >= 1) pair once


def test_cosine_schedule_warms_up_then_decays_to_a_tenth():
    cfg = StageConfig(steps=110, warmup=10, schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(60, cfg) == pytest.approx(0.55)


def test_unknown_or_invalid_calrec_parameters_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown parameter 'lamda_nig'"):
        make_model("calrec", {"lamda_nig": 1.0})
    with pytest.raises(BenchError, match="nig_targets must be one of"):
        make_model("calrec", {"nig_targets": "every"})
    with pytest.raises(BenchError, match="candidates"):
        make_model("calrec", {"candidates": {"bm25": 5}})


# ------------------------------------------------------------------------------ learning end to end
CHAIN = 20


def chain_data(n_users: int = 150, seed: int = 0) -> Interactions:
    """Each user walks a cycle of CHAIN items (item k, then k+1): the next item is predictable
    from the text of the last one, and every item is about equally popular. Three distractors
    whose titles hold the field name 'Year' open some histories."""
    rng = np.random.default_rng(seed)
    text = {f"c{k}": {"Title": f"w{k}", "Year": str(1990 + k % 3)} for k in range(CHAIN)}
    text.update({f"d{k}": {"Title": t, "Year": "1997"} for k, t in enumerate(["Year Horse", "Man Year", "Favorite Year"])})
    users, items, ts = [], [], []
    for u in range(n_users):
        start = int(rng.integers(CHAIN))
        walk = [f"c{(start + j) % CHAIN}" for j in range(int(rng.integers(5, 9)))]
        seq = ([f"d{u % 3}"] if u % 4 == 0 else []) + walk
        users += [f"u{u}"] * len(seq)
        items += seq
        ts += list(range(len(seq)))
    return Interactions("chain", "v1", np.array(users), np.array(items), np.array(ts, dtype=float), text)


@pytest.fixture(scope="module")
def chain():
    return leave_one_out(chain_data())


def fit_chain(split, tmp_path, **params):
    base = {"backbone": "tiny", "template": "compact", "nig_targets": "all", "examples": "epochs", "stage2_steps": 300,
            "lr": 3e-3, "warmup": 5, "schedule": "cosine", "batch_size": 16, "eval_every": 0, "lambda_tt": 0.0,
            "lambda_ut": 0.0, "n_samples": 5, "temperature": 0.5, "max_new_tokens": 6, "bf16": False, "device": "cpu",
            "valid_users": 32, "threads": 1}
    m = make_model("calrec", {**base, **params})
    m.fit(split, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(split.n_users), extra={"shared_cache": tmp_path}))
    ranks = score_users(m, split, np.arange(split.n_users), "test", True, 64, "t")
    return m, float(metrics_from_ranks(ranks, [10])["NDCG@10"].mean())


def popularity_ndcg(split) -> float:
    pop = make_model("pop", {})
    pop.fit(split, None)
    return float(metrics_from_ranks(score_users(pop, split, np.arange(split.n_users), "test", True, 64, "t"), [10])["NDCG@10"].mean())


def test_a_tiny_model_learns_a_text_predictable_next_item(chain, tmp_path):
    """Fails with a wrong label span, a shifted label or a broken retrieval: the model then learns
    no more than popularity, or its generations map to the wrong items."""
    pop_ndcg = popularity_ndcg(chain)
    m, qrr = fit_chain(chain, tmp_path)
    v = m.measured
    assert v["valid_nll"] < v["popularity_nll"] - 0.3  # it learned more than popularity
    assert qrr > pop_ndcg + 0.15, (qrr, pop_ndcg)
    like = make_model("calrec", {**m.p, "inference": "likelihood", "candidates": "all"})
    like.__dict__.update({k: getattr(m, k) for k in ("model", "tok", "head", "builder", "vocab", "trie", "catalog", "popularity",
                                                     "split", "seed", "gen", "_inference_model", "_item_vectors", "mask_history")})
    ranks = score_users(like, chain, np.arange(chain.n_users), "test", True, 64, "t")
    assert float(metrics_from_ranks(ranks, [10])["NDCG@10"].mean()) > pop_ndcg + 0.15


def test_trie_constrained_training_learns_the_chain_fast(chain, tmp_path):
    m, qrr = fit_chain(chain, tmp_path, vocab="trie", stage2_steps=150)
    assert m.measured["valid_nll"] < 1.0 and qrr > 0.8


def test_trie_likelihood_is_a_distribution_over_the_catalog_and_samples_are_items(tok):
    """With vocab='trie', exp(log p(item | prompt)) sums to 1 over the catalog's items, equals the
    product of per-token softmaxes over the allowed continuations, and every sample is an item."""
    from calrec.generate import sample

    model = tiny_llama(len(tok), heads=4, kv_heads=2).eval()
    b = PromptBuilder(tok, movie_text(), "movie", template="compact")
    prompts = [b.user_prompt(np.array([0, 1])).ids, b.user_prompt(np.array([5])).ids]
    every = [[b.continuation(i) for i in range(len(MOVIES))]] * 2
    got = continuation_logprobs(model, prompts, every, tok.pad_token_id, b.vocab, b.trie)
    for g in got:
        assert math.isclose(float(np.exp(g).sum()), 1.0, rel_tol=1e-4)
    plain = continuation_logprobs(model, prompts, every, tok.pad_token_id, b.vocab)
    assert all((g >= p - 1e-5).all() for g, p in zip(got, plain))  # renormalising over fewer tokens only raises them
    out = sample(model, prompts, 8, 1.5, 12, b.stop, tok.pad_token_id, torch.Generator().manual_seed(0), b.vocab, b.trie)
    items = {tuple(x) for x in b.items}
    assert all(tuple(s.tokens) in items for user in out for s in user)


def test_trie_labels_carry_the_allowed_continuations(tok):
    b = PromptBuilder(tok, movie_text(), "movie", template="compact")
    p = b.user_prompt(np.array([1, 2]), target=3)
    vocab = torch.tensor(b.vocab)
    batch = collate([p], [b.item_ids(3)], [3], tok.pad_token_id, "all", vocab=vocab, trie=b.trie)
    assert batch.allowed.shape == (int(batch.label_span.sum()), len(vocab))
    first = {tok.convert_ids_to_tokens(int(vocab[c])) for c in torch.nonzero(batch.allowed[0]).squeeze(1)}
    assert first == {"Unforgiven", "Year", "Man", "My", "Titanic", "Heat"}  # any item can start
    labelled = batch.user_ids[0][batch.label_span[0]]
    assert all(batch.allowed[k, torch.searchsorted(vocab, labelled[k])] for k in range(len(labelled)))
    with pytest.raises(BenchError, match="template 'compact'"):
        make_model("calrec", {"vocab": "trie", "nig_targets": "all", "template": "paper"})

"""CALRec on a tiny random Llama with a word-level tokenizer: fast, no bundled model needed."""
import math

import numpy as np
import pytest
import torch

from bench.datasets import load_dataset
from bench.models import FitContext, make_model
from bench.execute.scoring import score_users
from bench.split import leave_one_out
from bench.text import BM25Catalog
from calrec.backbone import tiny_llama, tiny_tokenizer
from calrec.generate import sample
from calrec.retrieve import group_generations, quasi_round_robin, reciprocal_rank_fusion
from calrec.text import PromptBuilder
from calrec.towers import LossWeights, collate, info_nce, nig_loss, pool
from calrec.train import Domain, Examples, StageConfig, domain_probabilities, train_stage


@pytest.fixture(scope="module")
def syn():
    return leave_one_out(load_dataset("synthetic", n_users=80, n_items=40, seed=2))


@pytest.fixture(scope="module")
def tok(syn):
    return tiny_tokenizer([" ".join(a.values()) for a in syn.item_text])


def test_pool_mean_and_last_over_spans():
    h = torch.arange(12, dtype=torch.float32).view(1, 4, 3)  # positions hold [0,1,2],[3,4,5],...
    span = torch.tensor([[False, True, True, False]])
    torch.testing.assert_close(pool(h, span, "mean"), torch.tensor([[4.5, 5.5, 6.5]]))
    torch.testing.assert_close(pool(h, span, "last"), torch.tensor([[6.0, 7.0, 8.0]]))
    empty = torch.zeros(1, 4, dtype=torch.bool)
    torch.testing.assert_close(pool(h, empty, "mean"), torch.tensor([[0.0, 1.0, 2.0]]))


def test_prompt_spans_cover_history_and_target(syn, tok):
    b = PromptBuilder(tok, syn.item_text, max_history=2)
    p = b.user_prompt(np.array([0, 1, 2]), target=3)
    hist = p.ids[p.history[0] : p.history[1]]
    # Only the last two history items, each after its item prefix.
    assert hist == b.first + b.items[1] + b.newline + b.next + b.items[2] + b.newline
    assert p.ids[p.target[0] : p.target[1]] == b.items[3] + [tok.eos_token_id]
    assert p.ids[: p.target[0]][-len(b.next):] == b.next
    tight = PromptBuilder(tok, syn.item_text, max_history=20, max_prompt_tokens=len(p.ids) - 1)
    q = tight.user_prompt(np.array([0, 1, 2]), target=3)
    assert len(q.ids) <= len(p.ids) - 1 and q.ids[q.target[0] : q.target[1]] == b.items[3] + [tok.eos_token_id]


def test_info_nce_matches_hand_computation_and_masks_false_negatives():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    keys = torch.tensor([7, 8, 7])  # rows 0 and 2 share an item: each is the other's false negative
    tau = 0.5
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731
    def row(i, cols):
        logits = [cos(a[i], p[j]) / tau for j in cols]
        return -(cos(a[i], p[i]) / tau - math.log(sum(math.exp(v) for v in logits)))
    want = (row(0, [0, 1]) + row(1, [0, 1, 2]) + row(2, [1, 2])) / 3
    assert float(info_nce(a, p, keys, tau)) == pytest.approx(want, rel=1e-5)


def test_nig_loss_uses_target_tokens_only(syn, tok):
    torch.manual_seed(0)
    model = tiny_llama(len(tok))
    b = PromptBuilder(tok, syn.item_text)
    batch = collate([b.user_prompt(np.array([0, 1]), 2)], [b.item_ids(2)], [2], tok.pad_token_id)
    h = model.model(input_ids=batch.user_ids, attention_mask=batch.user_mask).last_hidden_state
    got = nig_loss(model, h, batch.user_ids, batch.target_span)
    logits = model(input_ids=batch.user_ids, attention_mask=batch.user_mask).logits[0]
    s, e = b.user_prompt(np.array([0, 1]), 2).target
    want = torch.nn.functional.cross_entropy(logits[s - 1 : e - 1], batch.user_ids[0, s:e])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_quasi_round_robin_hand_example():
    item_text = [{"Title": t} for t in ["red ball", "red kite", "blue ball", "green tree", "red tree"]]
    cat = BM25Catalog(item_text)
    groups = group_generations(["red ball", "green tree", "red ball", "green tree", "red ball", "blue"],
                               [-1, -2, -1, -2, -1, -0.1])
    assert groups == ["red ball", "green tree", "blue"]  # by count, then mean log-prob
    got = quasi_round_robin(groups, cat, length=4, exclude={3})
    # rank 1: red ball -> 0; green tree -> 3 (history, skipped); blue -> 2
    # rank 2: red ball -> 2 or 1 (2 taken, so only 1 if it is rank 2); green tree -> 4 ...
    assert got[:2] == [0, 2] and 3 not in got and len(set(got)) == len(got) == 4
    assert quasi_round_robin(groups, cat, length=10, exclude=set(), depth=1) == [0, 3, 2]


def test_rrf_prefers_items_ranked_well_in_both():
    fused = reciprocal_rank_fusion([[2, 0]], np.array([0.1, 0.9, 0.8]), n_items=3)
    assert fused.argmax() == 2 and fused[1] > 0


def test_stage1_domain_probabilities_follow_user_counts(syn):
    big = leave_one_out(load_dataset("synthetic", n_users=160, n_items=40, seed=3))
    doms = [Domain("a", syn, None, 0), Domain("b", big, None, 40)]
    p = domain_probabilities(doms, 0.3)
    assert p[1] / p[0] == pytest.approx((160 / 80) ** 0.3)
    rng = np.random.default_rng(0)
    picks = [rng.choice(2, p=p) for _ in range(4000)]
    assert np.mean(picks) == pytest.approx(p[1], abs=0.03)


def with_unique_holdout(seed: int):
    """Synthetic data where every user's last two events are items nobody else has: any of them
    showing up in a training prompt is a leak."""
    from bench.datasets.base import Interactions

    d = load_dataset("synthetic", n_users=60, n_items=40, seed=seed)
    users, items, ts = list(d.user), list(d.item), list(d.timestamp)
    text = dict(d.item_text)
    for u in sorted(set(d.user)):
        for k in (1, 2):
            users.append(u); items.append(f"{u}-holdout{k}"); ts.append(3e6 + k)
            text[f"{u}-holdout{k}"] = {"Title": f"holdout {u} {k}", "Category": "Secret"}
    return leave_one_out(Interactions(f"leak{seed}", "v", np.array(users), np.array(items), np.array(ts), text))


def test_no_validation_or_test_item_enters_training(monkeypatch, tmp_path):
    seen: list[str] = []  # rendered texts of every item that entered a training prompt
    original, original_draw = PromptBuilder.user_prompt, Examples.draw
    training = [False]  # prompts built inside Examples.draw are training prompts (validation builds its own)

    def recording(self, history, target=None):
        if training[0]:
            seen.extend(self.texts[int(i)] for i in [*history, target])
        return original(self, history, target)

    def drawing(self, n):
        training[0] = True
        try:
            return original_draw(self, n)
        finally:
            training[0] = False

    target_split, other = with_unique_holdout(0), with_unique_holdout(1)
    monkeypatch.setattr(PromptBuilder, "user_prompt", recording)
    monkeypatch.setattr(Examples, "draw", drawing)
    monkeypatch.setattr("calrec.recommender.leave_one_out", lambda data: other)  # the stage-I second domain
    m = make_model("calrec", {"backbone": "tiny", "stage1": {"datasets": ["leak0", "synthetic"], "steps": 15},
                              "stage2_steps": 15, "eval_every": 0, "inference": "greedy", "bf16": False,
                              "shuffle_history": True, "target": "random"})
    m.fit(target_split, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path}))
    for split in (target_split, other):  # the construction really holds out unique items
        assert all("holdout" in split.item_ids[i] for i in np.concatenate([split.valid, split.test]))
    assert len(seen) > 100
    assert not [t for t in seen if "holdout" in t]


def test_tiny_model_loss_falls(syn, tok):
    torch.manual_seed(0)
    model = tiny_llama(len(tok))
    b = PromptBuilder(tok, syn.item_text)
    curves = []
    cfg = StageConfig(steps=40, batch_size=8, lr=3e-3, warmup=2, bf16=False)
    train_stage(model, None, [Domain("syn", syn, b, 0)], np.ones(1), cfg, LossWeights(), np.random.default_rng(0),
                tok.pad_token_id, None, curves, "stage2")
    first = np.mean([r["loss_total"] for r in curves[:5]])
    last = np.mean([r["loss_total"] for r in curves[-5:]])
    assert last < 0.8 * first
    assert {"loss_nig", "loss_tt", "loss_ut"} <= curves[0].keys()


def test_log_every_averages_the_steps_it_skips(syn, tok):
    def run(log_every, eval_every=0):
        torch.manual_seed(0)
        model, curves = tiny_llama(len(tok)), []
        cfg = StageConfig(steps=7, batch_size=4, lr=3e-3, warmup=2, bf16=False, log_every=log_every, eval_every=eval_every,
                          patience=99)
        validate = (lambda: {"valid_NDCG@10": 0.0}) if eval_every else None
        train_stage(model, None, [Domain("syn", syn, PromptBuilder(tok, syn.item_text), 0)], np.ones(1), cfg, LossWeights(),
                    np.random.default_rng(0), tok.pad_token_id, validate, curves, "s")
        return curves

    every, third = run(1), run(3)
    assert [r["step"] for r in third] == [3, 6, 7]  # and the last step, whatever the window
    for row, window in zip(third, ([0, 1, 2], [3, 4, 5], [6])):
        for k in ("loss_total", "loss_nig", "loss_ut"):
            assert row[k] == pytest.approx(np.mean([every[i][k] for i in window]), abs=2e-5)
    # An evaluation row (every 2nd step) ends a window early: the next row averages only the steps since.
    evaluated = run(3, eval_every=2)
    assert [r["step"] for r in evaluated] == [2, 3, 4, 6, 7]
    for row, window in zip(evaluated, ([0, 1], [2], [3], [4, 5], [6])):
        for k in ("loss_total", "loss_nig", "loss_ut"):
            assert row[k] == pytest.approx(np.mean([every[i][k] for i in window]), abs=2e-5)


def greedy_reference(model, prompt, steps, stop):
    ids = list(prompt)
    for _ in range(steps):
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if nxt in stop:
            break
        ids.append(nxt)
    return ids[len(prompt):]


def test_shared_prefill_sampling_matches_full_forward_greedy(syn, tok):
    torch.manual_seed(0)
    model = tiny_llama(len(tok)).eval()
    b = PromptBuilder(tok, syn.item_text)
    prompts = [b.user_prompt(np.array([0, 1, 2])).ids, b.user_prompt(np.array([5])).ids, b.user_prompt(np.array([7, 8])).ids]
    free = [greedy_reference(model, p, 6, set()) for p in prompts]
    # Stop on the 3rd token of the first prompt's continuation: samples finish at different steps,
    # so rows leave the batch mid-way; left padding and the shrinking KV cache must not matter.
    stop = {free[0][2]}
    got = sample(model, prompts, n=1, temperature=0.0, max_new_tokens=6, stop_ids=stop, pad_id=tok.pad_token_id)
    for p, s in zip(prompts, got):
        assert s[0].tokens == greedy_reference(model, p, 6, stop)
    assert len(got[0][0].tokens) == free[0].index(free[0][2])
    assert {len(u[0].tokens) for u in got} != {6} or not stop  # at least one sample stopped early
    many = sample(model, prompts, n=3, temperature=0.7, max_new_tokens=5, stop_ids=stop, pad_id=tok.pad_token_id,
                  generator=torch.Generator().manual_seed(0))
    assert [len(u) for u in many] == [3, 3, 3] and all(np.isfinite(s.logprob) for u in many for s in u)


def test_samples_sharing_one_prompt_kv_match_a_full_forward(syn, tok):
    """Each sample's recorded log-probability equals a plain full forward over prompt + sample: the
    prompt K/V kept once per user, the log-sum-exp merge and rows leaving the batch lose nothing.
    Grouped-query attention (4 query heads on 2 K/V heads) as in SmolLM2."""
    model = tiny_llama(len(tok), heads=4, kv_heads=2).eval()
    b = PromptBuilder(tok, syn.item_text)
    prompts = [b.user_prompt(np.array([0, 1, 2])).ids, b.user_prompt(np.array([5])).ids, b.user_prompt(np.array([7, 8])).ids]
    stop_token = greedy_reference(model, prompts[0], 3, set())[1]
    got = sample(model, prompts, n=4, temperature=1.5, max_new_tokens=6, stop_ids={stop_token},
                 pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(1))
    lengths = set()
    for p, user in zip(prompts, got):
        assert len(user) == 4
        for s in user:
            scored = s.tokens + ([stop_token] if len(s.tokens) < 6 else [])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([p + scored])).logits[0, len(p) - 1 : -1].float(), -1)
            assert s.logprob == pytest.approx(float(logp[torch.arange(len(scored)), scored].sum()), abs=1e-4)
            lengths.add(len(s.tokens))
    assert len(lengths) > 1  # samples finished at different steps


@pytest.mark.parametrize("inference", ["qrr", "top1", "greedy", "dense", "fused"])
def test_end_to_end_through_the_evaluator(syn, inference, tmp_path):
    m = make_model("calrec", {"backbone": "tiny", "stage2_steps": 6, "eval_every": 3, "lr": 3e-3, "n_samples": 3,
                              "max_new_tokens": 8, "inference": inference, "valid_users": 4, "bf16": False,
                              "select": "ndcg"})
    ctx = FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(syn.n_users), extra={"shared_cache": tmp_path})
    m.fit(syn, ctx)
    r = score_users(m, syn, np.arange(10), "test", True, 5, "t")
    assert len(r) == 10 and (r.above >= 0).all()
    assert any("valid_NDCG@10" in row for row in ctx.curves)


@pytest.mark.parametrize("top", [{}, {"train_layers": 1, "frozen_cache": True, "examples": "epochs", "nig_targets": "all", "dropout": 0.1,
                                     "template": "compact", "vocab": "trie"}])
def test_lora_trains_only_adapters_and_serves_through_the_evaluator(syn, tmp_path, top):
    m = make_model("calrec", {"backbone": "tiny", "lora_r": 4, "stage2_steps": 4, "eval_every": 2, "lr": 3e-3,
                              "n_samples": 3, "max_new_tokens": 6, "valid_users": 4, "bf16": False, "device": "cpu", **top})
    m.fit(syn, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(syn.n_users), extra={"shared_cache": tmp_path}))
    trainable = {n for n, p in m.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    if top:  # on the top layer only (of the tiny model's 2), trained on the cached output of the one below
        assert all(".layers.1." in n for n in trainable) and m.timings.get("frozen_cache_seconds")
    base = tiny_llama(len(m.tok), seed=0)  # what load_backbone built before the adapters
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in m.model.named_parameters()
              if "lora_" not in n}
    for n, p in base.named_parameters():
        torch.testing.assert_close(frozen[n], p)
    assert any(float(p.detach().abs().sum()) > 0 for n, p in m.model.named_parameters() if "lora_B" in n)  # adapters moved
    r = score_users(m, syn, np.arange(10), "test", True, 5, "t")
    assert len(r) == 10 and (r.above >= 0).all()


def test_stage1_checkpoint_is_reused(syn, tmp_path):
    params = {"backbone": "tiny", "stage1": {"datasets": ["synthetic"], "steps": 3}, "stage2_steps": 0,
              "inference": "greedy", "max_new_tokens": 4, "bf16": False}
    ctx = FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path})
    a = make_model("calrec", params)
    a.fit(syn, ctx)
    assert "cached" not in a.info()["timings"]["stage1"]
    b = make_model("calrec", {**params, "inference": "qrr"})
    b.fit(syn, ctx)
    assert "cached" in b.info()["timings"]["stage1"]
    for (n1, p1), (n2, p2) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(p1, p2)
    # Under the runner the cache is keyed by the code fingerprint: other code trains its own weights.
    for code, cached in (("v1", False), ("v1", True), ("v2", False)):
        c = make_model("calrec", params)
        c.fit(syn, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4),
                              extra={"shared_cache": tmp_path, "code_fingerprint": code}))
        assert ("cached" in c.info()["timings"]["stage1"]) == cached


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b"not a torch file"])
def test_a_damaged_stage_cache_is_retrained_not_trusted(syn, tmp_path, capsys, damage):
    """A stage file cut short (a full disk, a killed copy) or not a torch file at all: the stage is
    trained again, with a line naming the file, to the same weights; a damaged validation entry
    likewise is computed again."""
    params = {"backbone": "tiny", "stage1": {"datasets": ["synthetic"], "steps": 3}, "stage2_steps": 2,
              "eval_every": 0, "bf16": False, "device": "cpu", "select": "nll", "valid_users": 4}
    ctx = lambda: FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path})  # noqa: E731
    a = make_model("calrec", params)
    a.fit(syn, ctx())
    [stage1] = (tmp_path / "calrec-stage1").glob("*.pt")
    [valid] = (tmp_path / "calrec-validation").glob("*.json")
    stage1.write_bytes(damage(stage1.read_bytes()))
    valid.write_text('{"valid_nll": 1.')
    capsys.readouterr()
    b = make_model("calrec", params)
    b.fit(syn, ctx())
    err = capsys.readouterr()
    said = err.out + err.err
    assert f"{stage1}: its checksum does not match its bytes" in said and f"{valid}: its checksum does not match" in said
    assert "cached" not in b.info()["timings"]["stage1"] and b.measured == a.measured
    for p1, p2 in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p1, p2)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp-*"))
    c = make_model("calrec", params)  # the rewritten entries are whole again
    c.fit(syn, ctx())
    assert "cached" in c.info()["timings"]["stage1"] and c.measured == a.measured


def test_a_stage_cache_changed_inside_a_valid_file_is_caught_by_its_checksum(syn, tmp_path, capsys):
    """A weight changed in place (the file still unpickles) moved NDCG@10 with no word; and a
    validation entry holding something else than numbers was used as it was."""
    import hashlib
    import io
    import json

    params = {"backbone": "tiny", "stage2_steps": 2, "eval_every": 0, "bf16": False, "device": "cpu",
              "select": "nll", "valid_users": 4}
    ctx = lambda: FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path})  # noqa: E731
    a = make_model("calrec", params)
    a.fit(syn, ctx())
    [stage2] = (tmp_path / "calrec-stage2").glob("*.pt")
    saved = torch.load(io.BytesIO(stage2.read_bytes()), weights_only=False)
    first = next(iter(saved["state"]))
    saved["state"][first] = saved["state"][first] + 1.0  # a valid torch file with other weights
    buf = io.BytesIO()
    torch.save(saved, buf)
    stage2.write_bytes(buf.getvalue())
    [valid] = (tmp_path / "calrec-validation").glob("*.json")
    nonsense = json.dumps({"valid_nll": "not a number"}).encode()  # whole, checksummed, but not numbers
    valid.write_bytes(nonsense)
    valid.with_name(valid.name + ".sha256").write_text(hashlib.sha256(nonsense).hexdigest() + "\n")
    capsys.readouterr()
    b = make_model("calrec", params)
    b.fit(syn, ctx())
    said = "".join(capsys.readouterr())
    assert f"{stage2}: its checksum does not match its bytes" in said
    assert f"{valid}: it holds something other than what it should" in said
    assert b.measured == a.measured
    for p1, p2 in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p1, p2)


def test_inference_variants_share_one_trained_model(syn, tmp_path):
    """Inference ablations compare one trained model; a training change is a new model."""
    params = {"backbone": "tiny", "stage2_steps": 4, "eval_every": 2, "valid_users": 4, "n_samples": 2,
              "max_new_tokens": 4, "bf16": False, "device": "cpu"}
    ctx = lambda: FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path})
    qrr, c1 = make_model("calrec", {**params, "inference": "qrr"}), ctx()
    qrr.fit(syn, c1)
    dense, c2 = make_model("calrec", {**params, "inference": "dense"}), ctx()
    dense.fit(syn, c2)
    assert "cached" not in qrr.info()["timings"]["stage2"] and "cached" in dense.info()["timings"]["stage2"]
    assert c1.curves == c2.curves  # the cell still stores the training curve of the weights it uses
    assert qrr.measured == dense.measured  # the final validation is computed once per trained model
    assert 0 <= qrr.measured["valid_dense_NDCG@10"] <= qrr.measured["valid_dense_Recall@10"] <= 1
    for p1, p2 in zip(qrr.model.parameters(), dense.model.parameters()):
        torch.testing.assert_close(p1, p2)
    no_tt = make_model("calrec", {**params, "lambda_tt": 0.0})
    no_tt.fit(syn, ctx())
    assert "cached" not in no_tt.info()["timings"]["stage2"]


def test_a_cached_stage1_leaves_stage2_unchanged(syn, tmp_path):
    """Each stage draws from its own seeded stream, so I+II gives the same weights whether stage I
    was trained just now or loaded from the cache."""
    params = {"backbone": "tiny", "stage1": {"datasets": ["synthetic"], "steps": 3}, "stage2_steps": 3,
              "eval_every": 0, "bf16": False, "device": "cpu"}
    fresh = make_model("calrec", params)
    fresh.fit(syn, FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path / "a"}))
    warm_ctx = FitContext(seed=0, workdir=tmp_path, valid_users=np.arange(4), extra={"shared_cache": tmp_path / "b"})
    make_model("calrec", {**params, "stage2_steps": 0}).fit(syn, warm_ctx)  # fills b's stage-I cache only
    warm = make_model("calrec", params)
    warm.fit(syn, warm_ctx)
    assert "cached" in warm.info()["timings"]["stage1"] and "cached" not in warm.info()["timings"]["stage2"]
    for p1, p2 in zip(fresh.model.parameters(), warm.model.parameters()):
        torch.testing.assert_close(p1, p2)


def test_inverse_cdf_sampling_matches_the_distribution():
    from calrec.generate import sample_categorical

    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1)
    draws = sample_categorical(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)
    assert (draws != 1).all()  # a zero-probability token is never drawn


def test_info_nce_groups_contrast_within_their_rows_only():
    torch.manual_seed(0)
    a, p = torch.randn(6, 4), torch.randn(6, 4)
    keys, logq = torch.arange(6), torch.randn(6)
    grouped = info_nce(a, p, keys, 0.1, logq, group=3)
    apart = (info_nce(a[:3], p[:3], keys[:3], 0.1, logq[:3]) + info_nce(a[3:], p[3:], keys[3:], 0.1, logq[3:])) / 2
    torch.testing.assert_close(grouped, apart)
    torch.testing.assert_close(info_nce(a, p, keys, 0.1, logq, group=6), info_nce(a, p, keys, 0.1, logq))


@pytest.mark.parametrize("template", ["paper", "compact"])
@pytest.mark.parametrize("nig_targets", ["last", "all"])
def test_labelled_tokens_counts_what_collate_labels(syn, tok, template, nig_targets):
    from calrec.towers import labelled_tokens

    b = PromptBuilder(tok, syn.item_text, max_history=3, template=template)
    prompts = [b.user_prompt(syn.train[u][:-1], target=int(syn.train[u][-1])) for u in range(5)]
    batch = collate(prompts, [b.item_ids(0)] * 5, list(range(5)), tok.pad_token_id, nig_targets)
    assert sum(labelled_tokens(p, nig_targets) for p in prompts) == int(batch.label_span.sum())

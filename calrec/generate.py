"""Sampling item texts from the user prompt (docs/calrec-spec.md: Inference, step 1).

HF `generate` repeats each prompt's prefill for every sample, and even with the prefill shared, a
KV cache repeated N times makes every decode step read N copies of the prompt's keys and values
(on 2 CPU cores that attention was a quarter of the sampling time). Here the prompts of a batch of
users are prefilled once (left-padded) and their K/V are kept ONCE per user; the N samples per user
are decoded together, each stopping at its own end-of-item token, and each decode step attends to
the shared prompt K/V (all samples of a user in one matmul) and to the sample's own generated K/V,
merged exactly by log-sum-exp. Greedy decoding is N=1, T=0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from calrec.backbone import decoder, pad_batch
from calrec.trie import CatalogTrie

SHARED_PREFIX = "calrec_shared_prefix"


@dataclass
class Sample:
    tokens: list[int]
    logprob: float  # sum of the model's (untempered) token log-probabilities


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row by inverse CDF: a single uniform per row. torch.multinomial draws one
    exponential per vocabulary entry (49k per row), 100 ms per decode step on this CPU."""
    cdf = probs.cumsum(dim=-1)
    # Uniforms come from the (CPU) generator whatever the device: the same seed, the same draws.
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=cdf.dtype).to(cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp(max=probs.shape[1] - 1)


class SharedPrefixKV:
    """Per layer: the prompt's K/V once per user (U, kv_heads, P, d) and each sample's generated
    K/V (rows, kv_heads, max_new, d). Rows are samples still decoding; row r belongs to user
    `user[r]` and is that user's sample `slot[r]`."""

    def __init__(self, prompt_cache, prompt_mask: torch.Tensor, n: int, max_new_tokens: int):
        self.pk = [layer.keys for layer in prompt_cache.layers]
        self.pv = [layer.values for layer in prompt_cache.layers]
        users, kv_heads, _, dim = self.pk[0].shape
        self.n = n
        self.bias = torch.zeros(prompt_mask.shape, dtype=torch.float32, device=prompt_mask.device)
        self.bias = self.bias.masked_fill(~prompt_mask.bool(), float("-inf"))[:, None, None, :]  # (U, 1, 1, P)
        rows = users * n
        self.gk = [k.new_empty(rows, kv_heads, max_new_tokens, dim) for k in self.pk]
        self.gv = [v.new_empty(rows, kv_heads, max_new_tokens, dim) for v in self.pv]
        self.keep(torch.arange(rows, device=prompt_mask.device), None)
        self.t = 0  # generated tokens written so far (the same for every row)

    def keep(self, alive: torch.Tensor, rows: torch.Tensor | None) -> None:
        """`alive`: original row of each remaining sample; `rows`: which current rows remain."""
        if rows is not None:
            self.gk = [k[rows] for k in self.gk]
            self.gv = [v[rows] for v in self.gv]
        self.user, self.slot = alive // self.n, alive % self.n

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        rows, heads, _, dim = q.shape
        kv_heads = k.shape[1]
        g = heads // kv_heads  # query heads per K/V head (grouped-query attention)
        gk, gv, t = self.gk[layer], self.gv[layer], self.t + 1
        gk[:, :, self.t], gv[:, :, self.t] = k[:, :, 0], v[:, :, 0]
        q = q.reshape(rows, kv_heads, g, dim) * scale
        # Own generated tokens, per row.
        o_gen, lse_gen = _softmax_attend(q, gk[:, :, :t], gv[:, :, :t], None)  # (rows, kv, g, d), (rows, kv, g)
        # The prompt, per user: its samples' queries side by side against one copy of its K/V.
        pk, pv = self.pk[layer], self.pv[layer]
        users = pk.shape[0]
        qu = q.new_zeros(users, self.n, kv_heads, g, dim)
        qu[self.user, self.slot] = q
        qu = qu.permute(0, 2, 1, 3, 4).reshape(users, kv_heads, self.n * g, dim)
        o_pre, lse_pre = _softmax_attend(qu, pk, pv, self.bias)  # (U, kv, n*g, d), (U, kv, n*g)
        o_pre = o_pre.view(users, kv_heads, self.n, g, dim)[self.user, :, self.slot]
        lse_pre = lse_pre.view(users, kv_heads, self.n, g)[self.user, :, self.slot]
        # softmax over [prompt; generated] from each part's normalised output and log-sum-exp (exact).
        w = torch.sigmoid(lse_pre - lse_gen)[..., None]
        out = (w * o_pre.float() + (1 - w) * o_gen.float()).to(q.dtype)
        return out.reshape(rows, 1, heads, dim)


def _softmax_attend(q, k, v, bias, fused: bool | None = None):
    """softmax(q k^T + bias) v and the log-sum-exp of each query's scores (q already scaled). On a
    CPU, torch's fused flash kernel, which returns both (3-4x faster than the unfused ops here,
    where these are half of a decode step); elsewhere the plain ops."""
    if fused is None:  # a private aten op (torch 2.13 has it): fall back to plain ops where a build lacks it
        fused = q.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
    if fused:
        mask = None if bias is None else bias.to(q.dtype)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask, scale=1.0)
    s = (q @ k.transpose(-1, -2)).float()
    if bias is not None:
        s = s + bias
    lse = torch.logsumexp(s, dim=-1)
    return ((s - lse[..., None]).exp().to(v.dtype) @ v), lse


def _attention(module, query, key, value, attention_mask, shared_kv: SharedPrefixKV | None = None, **kwargs):
    """SDPA, except in our decode steps, which pass their SharedPrefixKV."""
    if shared_kv is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    return shared_kv.attend(module.layer_idx, query, key, value, scale), None


AttentionInterface.register(SHARED_PREFIX, _attention)
AttentionMaskInterface.register(SHARED_PREFIX, sdpa_mask)


def _decode(model, tok: torch.Tensor, pos: torch.Tensor, kv: SharedPrefixKV, cols: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token logits of one decode step; with `cols`, only those vocabulary columns (the LM head
    over 49k tokens is a fifth of a step's FLOPs, and a catalog uses ~3k of them)."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = SHARED_PREFIX  # read at call time by every attention layer
    try:
        # A 4D mask is passed through untouched; our attention builds its own from the prompt mask.
        dummy = torch.ones(len(tok), 1, 1, 1, dtype=torch.bool, device=tok.device)
        args = dict(input_ids=tok[:, None], attention_mask=dummy, position_ids=pos[:, None], use_cache=False, shared_kv=kv)
        if cols is None:
            logits = model(**args).logits[:, -1]
        else:
            # decoder(): a PeftModel's .model is the CausalLM, not the transformer
            logits = decoder(model)(**args).last_hidden_state[:, -1] @ model.get_output_embeddings().weight[cols].T
    finally:
        config._attn_implementation = before
    kv.t += 1
    return logits.float()


def vocab_bias(vocab: list[int] | None, size: int, device) -> torch.Tensor | float:
    """Added to logits: 0 for allowed tokens, -inf for the rest (0 everywhere without `vocab`)."""
    if vocab is None:
        return 0.0
    bias = torch.full((size,), float("-inf"), device=device)
    bias[torch.tensor(vocab, device=device)] = 0.0
    return bias


def _prefill(model, prompts: list[list[int]], n: int, max_new_tokens: int, pad_id: int):
    """Prompts prefilled once (left-padded): the shared K/V for n rows per user, each row's first
    logits and next position."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in pad_batch(prompts, pad_id, left=True))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    kv = SharedPrefixKV(out.cache, mask, n, max_new_tokens)
    return kv, out.logits[:, -1].float().repeat_interleave(n, dim=0), pos[:, -1].repeat_interleave(n, dim=0) + 1


def _trie_filter(logits: torch.Tensor, trie: CatalogTrie | None, nodes: list[int]) -> torch.Tensor:
    """Logits with every token that continues no catalog item (after each row's node) at -inf.
    Rows off the trie or at a finished item keep their logits (they are finished; never recorded)."""
    if trie is None:
        return logits
    mask = trie.mask(nodes, size=logits.shape[-1]).to(logits.device)
    mask[~mask.any(dim=1)] = True
    return logits.masked_fill(~mask, float("-inf"))


@torch.no_grad()
def sample(model, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int, stop_ids: set[int],
           pad_id: int, generator: torch.Generator | None = None, vocab: list[int] | None = None,
           trie: CatalogTrie | None = None) -> list[list[Sample]]:
    """N samples per prompt. temperature <= 0 means greedy (then N should be 1). With `vocab`,
    only those tokens can be drawn; with `trie`, only tokens that continue a catalog item (and
    log-probabilities are over the allowed tokens)."""
    device = next(model.parameters()).device
    kv, logits, next_pos = _prefill(model, prompts, n, max_new_tokens, pad_id)
    bias = vocab_bias(vocab, logits.shape[-1], device)
    rows = logits.shape[0]
    nodes = [0] * rows  # trie node of each original row
    alive = torch.arange(rows, device=device)  # original row of each sample still in the batch
    logits = _trie_filter(logits + bias, trie, nodes)
    dead = torch.zeros(rows, dtype=torch.bool, device=device)  # in the batch but finished: decoded, never recorded
    logprob = torch.zeros(rows, device=device)
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    length = torch.zeros(rows, dtype=torch.long, device=device)
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        logp = torch.log_softmax(logits, dim=-1)
        if temperature > 0:
            tok = sample_categorical(torch.softmax(logits / temperature, dim=-1), generator)
        else:
            tok = logits.argmax(dim=-1)
        going = ~torch.isin(tok, stop) & ~dead
        logprob[alive] += torch.where(dead, 0.0, logp.gather(1, tok[:, None]).squeeze(1))
        idx = alive[going]
        tokens[idx, length[idx]] = tok[going]
        length[idx] += 1
        if step == max_new_tokens - 1 or not going.any():
            break
        dead = dead | ~going
        if dead.sum() * 4 >= len(dead):  # finished samples leave the batch in bulk: each shrink copies
            keep = (~dead).nonzero().squeeze(1)  # every generated K/V row once
            alive, next_pos, tok, dead = alive[keep], next_pos[keep], tok[keep], dead[keep]
            kv.keep(alive, keep)
        rows_now = alive.tolist()
        if trie is not None:
            stepped = trie.step([nodes[r] for r in rows_now], tok.tolist())
            for r, node in zip(rows_now, stepped):
                nodes[r] = node
        logits = _decode(model, tok, next_pos, kv) + bias
        logits, next_pos = _trie_filter(logits, trie, [nodes[r] for r in rows_now]), next_pos + 1
    tokens, length, logprob = tokens.cpu(), length.cpu(), logprob.cpu()
    result = []
    for u in range(len(prompts)):
        result.append([Sample(tokens[r, : length[r]].tolist(), float(logprob[r])) for r in range(u * n, (u + 1) * n)])
    return result


@torch.no_grad()
def continuation_logprobs(model, prompts: list[list[int]], continuations: list[list[list[int]]], pad_id: int,
                          vocab: list[int] | None = None, trie: CatalogTrie | None = None) -> list[np.ndarray]:
    """log p(continuation | prompt) for each user's candidate continuations (teacher-forced), with
    each prompt's K/V computed once and shared by all its candidates (the same attention path as
    sampling). Used to rank candidate items by the model's likelihood of their text. With `vocab`
    the softmax is over those tokens; with `trie` (which needs `vocab`) over the tokens that
    continue a catalog item, so the result is log p(item | prompt) over the catalog."""
    n = max(len(c) for c in continuations)
    width = max(len(x) for c in continuations for x in c)
    device = next(model.parameters()).device
    kv, logits, next_pos = _prefill(model, prompts, n, width, pad_id)
    cols = torch.tensor(vocab, device=device) if vocab is not None else None
    if cols is not None:
        logits = logits[:, cols]  # from here on every step's logits are over `cols` only
    rows = len(prompts) * n
    tokens = torch.full((rows, width), pad_id, dtype=torch.long)
    length = torch.zeros(rows, dtype=torch.long)
    nodes = [[] for _ in range(rows)]  # per row, the trie node before each of its tokens
    for u, cands in enumerate(continuations):
        for j, c in enumerate(cands):
            tokens[u * n + j, : len(c)] = torch.tensor(c, dtype=torch.long)
            length[u * n + j] = len(c)
            if trie is not None:
                nodes[u * n + j] = [0, *trie.step_path(c)]
    tokens, length = tokens.to(device), length.to(device)
    total = torch.zeros(rows, dtype=torch.float32, device=device)
    alive = torch.arange(rows, device=device)  # original row of each continuation still running
    for step in range(width):
        tok = tokens[alive, step]
        lc, target = logits, (torch.searchsorted(cols, tok).clamp(max=len(cols) - 1) if cols is not None else tok)
        if trie is not None:
            at = [nodes[r][step] if step < len(nodes[r]) else -1 for r in alive.tolist()]
            lc = lc.masked_fill(~trie.mask([max(a, 0) for a in at], cols).to(device), float("-inf"))
        logp = lc.gather(1, target[:, None]).squeeze(1) - torch.logsumexp(lc, dim=-1)
        total[alive] += torch.where(step < length[alive], logp, 0.0)
        going = length[alive] > step + 1
        if step == width - 1 or not going.any():
            break
        if (~going).sum() * 4 >= len(going):  # finished rows leave in bulk, as in `sample`
            keep = going.nonzero().squeeze(1)
            alive, next_pos, tok = alive[keep], next_pos[keep], tok[keep]
            kv.keep(alive, keep)
        logits, next_pos = _decode(model, tok, next_pos, kv, cols), next_pos + 1
    total = total.cpu().numpy()
    return [total[u * n : u * n + len(c)] for u, c in enumerate(continuations)]

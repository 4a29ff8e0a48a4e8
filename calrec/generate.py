"""Sampling item texts from the user prompt (CALREC_SPEC: Inference, step 1).

HF `generate` repeats each prompt's prefill for every sample. Here the prompts of a batch of users
are prefilled once (left-padded), the KV cache is repeated N times, and the N samples per user are
decoded together, each stopping at its own end-of-item token. Greedy decoding is N=1, T=0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StaticCache

from calrec.towers import pad_batch


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


def _reshape_rows(cache, fn) -> None:
    """Apply `fn` to the batch dimension of every preallocated K/V tensor (StaticLayer has no
    batch_repeat_interleave / batch_select_indices of its own)."""
    for layer in cache.layers:
        layer.keys, layer.values = fn(layer.keys), fn(layer.values)
        layer.batch_size = layer.keys.shape[0]


@torch.no_grad()
def sample(model, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int, stop_ids: set[int],
           pad_id: int, generator: torch.Generator | None = None) -> list[list[Sample]]:
    """N samples per prompt. temperature <= 0 means greedy (then N should be 1)."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in pad_batch(prompts, pad_id, left=True))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    # A preallocated cache written in place: the default DynamicCache concatenates every row's whole
    # K/V at every step, which was 44% of a decode step here.
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + max_new_tokens)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
    if n > 1:
        _reshape_rows(cache, lambda t: t.repeat_interleave(n, dim=0))
    logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)
    mask = mask.repeat_interleave(n, dim=0)
    next_pos = pos[:, -1].repeat_interleave(n, dim=0) + 1
    rows = logits.shape[0]
    alive = torch.arange(rows, device=device)  # original row of each sample still in the batch
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
        if dead.sum() * 4 >= len(dead):  # finished samples leave the batch (and the cache) in bulk:
            keep = (~dead).nonzero().squeeze(1)  # each shrink copies every cache row once
            _reshape_rows(cache, lambda t: t[keep])
            alive, mask, next_pos, tok, dead = alive[keep], mask[keep], next_pos[keep], tok[keep], dead[keep]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None], cache=cache, use_cache=True)
        logits, next_pos = out.logits[:, -1].float(), next_pos + 1
    tokens, length, logprob = tokens.cpu(), length.cpu(), logprob.cpu()
    result = []
    for u in range(len(prompts)):
        result.append([Sample(tokens[r, : length[r]].tolist(), float(logprob[r])) for r in range(u * n, (u + 1) * n)])
    return result

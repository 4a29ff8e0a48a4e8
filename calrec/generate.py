"""Sampling item texts from the user prompt (CALREC_SPEC: Inference, step 1).

HF `generate` repeats each prompt's prefill for every sample. Here the prompts of a batch of users
are prefilled once (left-padded), the KV cache is repeated N times, and the N samples per user are
decoded together, each stopping at its own end-of-item token. Greedy decoding is N=1, T=0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sample:
    tokens: list[int]
    logprob: float  # sum of the model's (untempered) token log-probabilities


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def sample(model, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int, stop_ids: set[int],
           pad_id: int, generator: torch.Generator | None = None) -> list[list[Sample]]:
    """N samples per prompt. temperature <= 0 means greedy (then N should be 1)."""
    ids, mask = left_pad(prompts, pad_id)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = out.cache
    if n > 1:
        cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)
    mask = mask.repeat_interleave(n, dim=0)
    next_pos = pos[:, -1].repeat_interleave(n, dim=0) + 1
    rows = logits.shape[0]
    done = torch.zeros(rows, dtype=torch.bool)
    logprob = torch.zeros(rows)
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long)
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long)
    length = torch.zeros(rows, dtype=torch.long)
    for step in range(max_new_tokens):
        logp = torch.log_softmax(logits, dim=-1)
        if temperature > 0:
            tok = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator).squeeze(1)
        else:
            tok = logits.argmax(dim=-1)
        live = ~done
        logprob += torch.where(live, logp.gather(1, tok[:, None]).squeeze(1), 0.0)
        is_stop = torch.isin(tok, stop)
        tokens[:, step] = torch.where(live & ~is_stop, tok, pad_id)
        length += (live & ~is_stop).long()
        done |= is_stop
        if done.all() or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None], cache=cache, use_cache=True)
        cache, logits, next_pos = out.cache, out.logits[:, -1].float(), next_pos + 1
    result = []
    for u in range(len(prompts)):
        result.append([Sample(tokens[r, : length[r]].tolist(), float(logprob[r])) for r in range(u * n, (u + 1) * n)])
    return result

"""CALRec's two towers on one LLM and its three losses (CALREC_SPEC: Towers and pooling, Losses).

User tower: prompt + target item text (teacher forcing) -> v_U (pooled over the history span) and
v_T|U (pooled over the target span). Item tower: the target item text alone -> v_T.
    L = lambda_nig * L_NIG + lambda_tt * InfoNCE(v_T|U, v_T) + lambda_ut * InfoNCE(v_U, v_T)
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from calrec.text import PromptTokens


@dataclass
class Batch:
    user_ids: torch.Tensor  # (B, Lu) right-padded prompt + target tokens
    user_mask: torch.Tensor  # (B, Lu) 1 for real tokens
    history_span: torch.Tensor  # (B, Lu) bool
    target_span: torch.Tensor  # (B, Lu) bool
    item_ids: torch.Tensor  # (B, Li) target item text alone
    item_mask: torch.Tensor
    item_key: torch.Tensor  # (B,) one id per (domain, item): equal ids are false negatives

    @property
    def n_tokens(self) -> int:
        return int(self.user_mask.sum() + self.item_mask.sum())

    def to(self, device) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


def pad_batch(rows: list[list[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to the longest: right-padded for training, left-padded for generation
    (so every prompt ends at the last column)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def span_mask(spans: list[tuple[int, int]], width: int) -> torch.Tensor:
    pos = torch.arange(width)[None, :]
    lo = torch.tensor([s[0] for s in spans])[:, None]
    hi = torch.tensor([s[1] for s in spans])[:, None]
    return (pos >= lo) & (pos < hi)


def collate(prompts: list[PromptTokens], items: list[list[int]], item_keys: list[int], pad: int) -> Batch:
    user_ids, user_mask = pad_batch([p.ids for p in prompts], pad)
    item_ids, item_mask = pad_batch(items, pad)
    width = user_ids.shape[1]
    return Batch(user_ids, user_mask, span_mask([p.history for p in prompts], width),
                 span_mask([p.target for p in prompts], width), item_ids, item_mask, torch.tensor(item_keys))


def decoder(model):
    """The transformer without its LM head (works for plain and peft-wrapped causal LMs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def hidden_states(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last-layer states (after the final norm); the LM head is not run here."""
    return decoder(model)(input_ids=ids, attention_mask=mask).last_hidden_state


def pool(hidden: torch.Tensor, span: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Mean over the span's positions, or the state at its last position. An empty span (a user
    with no history) falls back to the first token."""
    empty = ~span.any(dim=1)
    if empty.any():
        span = span.clone()
        span[empty, 0] = True  # the prompt's first token: a defined, history-free representation
    if how == "mean":
        m = span.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1)
    if how == "last":
        last = span.shape[1] - 1 - span.flip(1).float().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0]), last]
    raise ValueError(f"pooling must be 'mean' or 'last', not {how!r}")


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, keys: torch.Tensor, tau: float) -> torch.Tensor:
    """In-batch InfoNCE with cosine similarity / tau. Row i's positive is column i; other columns
    holding the same item (same key) are false negatives and are masked out."""
    logits = F.normalize(anchor.float(), dim=-1) @ F.normalize(positive.float(), dim=-1).T / tau
    same = keys[:, None] == keys[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(keys), device=logits.device))


def nig_loss(model, hidden: torch.Tensor, ids: torch.Tensor, target_span: torch.Tensor) -> torch.Tensor:
    """Next-item generation: LM cross-entropy on the target item's tokens only. Logits are computed
    only at the positions that predict them (the 49k-word head is ~20% of SmolLM2's compute)."""
    predicts = torch.zeros_like(target_span)
    predicts[:, :-1] = target_span[:, 1:]
    logits = model.get_output_embeddings()(hidden[predicts])
    return F.cross_entropy(logits.float(), ids[target_span])


@dataclass
class LossWeights:
    nig: float = 1.0
    tt: float = 0.5
    ut: float = 0.5
    tau: float = 0.05
    pooling: str = "mean"


def calrec_loss(model, head: nn.Module | None, batch: Batch, w: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    hidden = hidden_states(model, batch.user_ids, batch.user_mask)
    total = hidden.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    if w.nig:
        l_nig = nig_loss(model, hidden, batch.user_ids, batch.target_span)
        total = total + w.nig * l_nig
        parts["nig"] = l_nig.item()
    if w.tt or w.ut:
        proj = head if head is not None else nn.Identity()
        v_t = proj(pool(hidden_states(model, batch.item_ids, batch.item_mask), batch.item_mask.bool(), w.pooling))
        if w.tt:
            l_tt = info_nce(proj(pool(hidden, batch.target_span, w.pooling)), v_t, batch.item_key, w.tau)
            total = total + w.tt * l_tt
            parts["tt"] = l_tt.item()
        if w.ut:
            l_ut = info_nce(proj(pool(hidden, batch.history_span, w.pooling)), v_t, batch.item_key, w.tau)
            total = total + w.ut * l_ut
            parts["ut"] = l_ut.item()
    parts["total"] = total.item()
    return total, parts

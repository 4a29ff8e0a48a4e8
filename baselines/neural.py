"""Shared parts of our own ID-based sequence models (SASRec, BERT4Rec): padding, the transformer
encoder, and a training loop with early stopping on validation NDCG@10 from the shared evaluator.

Items are shifted by one inside these models: 0 is padding, item i is token i + 1.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.models import FitContext
from bench.runner import validation_ndcg10
from bench.split import Split


def pad_left(seqs: list[np.ndarray], max_len: int, extra: list[int] | None = None) -> torch.Tensor:
    """Last `max_len` tokens of each sequence (items shifted by one, `extra` tokens appended as
    they are), right-aligned and 0-padded to the longest row: no width is wasted on padding."""
    rows = []
    for s in seqs:
        toks = np.asarray(s, dtype=np.int64) + 1
        if extra is not None:
            toks = np.append(toks, np.asarray(extra, dtype=np.int64))
        rows.append(toks[-max_len:])
    out = np.zeros((len(rows), max(1, max((len(r) for r in rows), default=1))), dtype=np.int64)
    for row, toks in enumerate(rows):
        if len(toks):
            out[row, -len(toks):] = toks
    return torch.from_numpy(out)


class Block(nn.Module):
    """Pre-LN transformer block. Dropout only on the two residual branches: on this CPU random
    numbers cost ~130 ms per 6.5M draws, and attention-weight / inner-FFN dropout tripled them."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)
        self.heads = heads

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, h)))
        return x + self.drop(self.ff(self.ln2(x)))


class SequenceEncoder(nn.Module):
    """Item + position embeddings into pre-LN blocks; `causal` for SASRec, not for BERT4Rec.
    Positions count back from the last token, so batches of any width share one meaning."""

    def __init__(self, n_tokens: int, max_len: int, hidden: int, layers: int, heads: int, dropout: float, causal: bool):
        super().__init__()
        self.item = nn.Embedding(n_tokens, hidden, padding_idx=0)
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.causal = causal
        nn.init.normal_(self.item.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n = tokens.shape
        x = self.item(tokens) * math.sqrt(self.item.embedding_dim) + self.pos.weight[:n].flip(0)
        allowed = (tokens > 0)[:, None, :].expand(b, n, n)
        if self.causal:
            allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
        # Padding rows may see themselves, so no row is fully masked (which would give NaN).
        allowed = allowed | torch.eye(n, dtype=torch.bool)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)


def train_with_early_stopping(model, net: nn.Module, split: Split, ctx: FitContext, step, batches,
                              epochs: int, patience: int, lr: float, weight_decay: float, eval_every: int = 1) -> None:
    """Adam over `batches()` (a fresh iterable per epoch) calling `step(batch) -> loss`; keep the
    weights with the best validation NDCG@10; stop after `patience` evaluations without gain."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, bad = -1.0, None, 0
    model.epochs_run = 0
    bar = tqdm(range(1, epochs + 1), desc=f"{type(model).__name__} epochs", leave=False)
    for epoch in bar:
        net.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for batch in batches():
            loss = step(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        model.epochs_run = epoch
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "epoch_seconds": round(time.perf_counter() - t0, 3)}
        if epoch % eval_every == 0 or epoch == epochs:
            net.eval()
            with torch.no_grad():
                row["valid_NDCG@10"] = validation_ndcg10(model, split, ctx.valid_users)
            if row["valid_NDCG@10"] > best:
                best, best_state, bad = row["valid_NDCG@10"], copy.deepcopy(net.state_dict()), 0
                model.best_epoch = epoch
            else:
                bad += 1
        ctx.curves.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", valid=f"{best:.4f}")
        if bad >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    model.best_valid_ndcg10 = best

"""Shared parts of our own ID-based sequence models (SASRec, BERT4Rec): padding, the transformer
encoder, and a training loop with early stopping on validation NDCG@10 from the shared evaluator.

Items are shifted by one inside these models: 0 is padding, item i is token i + 1.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from baselines import resume
from baselines.dropout import FastDropout
from bench.errors import BenchError
from bench.models import FitContext
from bench.execute.scoring import validation_ndcg10
from bench.split import Split


def pad_right(seqs: list[np.ndarray], max_len: int, extra: list[int] | None = None) -> torch.Tensor:
    """Last `max_len` tokens of each sequence (items shifted by one, `extra` tokens appended as
    they are), left-aligned and 0-padded to the longest row. Padding at the end means a causal
    model needs no padding mask at all (real tokens never look forward), which lets SDPA take its
    fused kernel."""
    rows = []
    for s in seqs:
        toks = np.asarray(s, dtype=np.int64) + 1
        if extra is not None:
            toks = np.append(toks, np.asarray(extra, dtype=np.int64))
        rows.append(toks[-max_len:])
    out = np.zeros((len(rows), max(1, max((len(r) for r in rows), default=1))), dtype=np.int64)
    for row, toks in enumerate(rows):
        out[row, : len(toks)] = toks
    return torch.from_numpy(out)


def windows(seqs: list[np.ndarray], width: int, stride: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Cut each sequence into pieces of at most `width` items, back from its end, one every
    `stride` items, and say how many of each piece's last transitions are its training targets:
    every next-item transition is a target in exactly one piece (taking only the last window drops
    14% of ML-100k's training targets and 34% of ML-1M's).

    The default stride, width - 1 (pieces overlap by one item), trains every target of a piece;
    a shorter stride trains each target with at least width - stride items before it, as RecBole's
    one-prefix-per-row training does (stride 1), at width / stride times fewer pieces than it."""
    stride = stride or width - 1
    pieces, targets = [], []
    for s in seqs:
        end = len(s)
        while end >= 2:
            start = max(0, end - width)
            pieces.append(s[start:end])
            targets.append(end - start - 1 if start == 0 else min(stride, end - start - 1))
            if start == 0:
                break
            end -= stride
    return pieces, np.array(targets, dtype=np.int64)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Indices grouped into batches of similar length, so little compute goes to padding (random
    batches of ML-100k users are over half padding). With `rng`: ties broken at random and the
    batches shuffled, for training."""
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return batches if rng is None else [batches[i] for i in rng.permutation(len(batches))]


def random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices 0..n-1 shuffled into batches: each batch a uniform sample of the training rows."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class Block(nn.Module):
    """Transformer block, pre-LN by default; `post_ln` is the layout of RecBole's SASRec (and of
    BERT). Dropout on the residual branches, and on attention weights only if `attn_dropout`: even
    with `FastDropout` its masks are the largest random draws of a step (b * heads * n * n)."""

    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float = 0.0, post_ln: bool = False):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop, self.attn_drop = FastDropout(dropout), FastDropout(attn_dropout)
        self.heads, self.post_ln = heads, post_ln

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, last: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (b, 1, n) keys each query may see, or None for plain causal attention. With
        `last` (b,) only the state at those positions is computed (b, 1, hidden): all inference needs."""
        b, n, h = x.shape
        q, k, v = self.qkv(x if self.post_ln else self.ln1(x)).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        if last is not None:
            rows = torch.arange(b, device=x.device)
            x, q = x[rows, last][:, None], q[rows, :, last][:, :, None]
            if mask is None:  # is_causal would align the one query with key 0, not with `last`
                mask = (torch.arange(n, device=x.device) <= last[:, None])[:, None, :]
        if self.training and self.attn_drop.p > 0:  # SDPA would draw its mask with torch's slow bernoulli_
            seen = torch.ones(n, n, dtype=torch.bool, device=x.device).tril() if mask is None else mask[:, None]
            s = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).masked_fill(~seen, float("-inf"))
            a = self.attn_drop(s.softmax(-1)) @ v
        elif mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        a = self.drop(self.proj(a.transpose(1, 2).reshape(b, -1, h)))
        if self.post_ln:
            x = self.ln1(x + a)
            return self.ln2(x + self.drop(self.ff(x)))
        x = x + a
        return x + self.drop(self.ff(self.ln2(x)))


LAYOUTS = ("pre-ln", "recbole")


def check_layout(layout: str, owner: str) -> None:
    """One check for the encoder and for the models that build it later, in `fit`."""
    if layout not in LAYOUTS:
        raise BenchError(f"{owner}: layout {layout!r} is not one of {LAYOUTS}")


class SequenceEncoder(nn.Module):
    """Item + position embeddings into transformer blocks; `causal` for SASRec, not for BERT4Rec.
    Input is right-padded (`pad_right`).

    layout "pre-ln": embeddings scaled by sqrt(hidden), pre-LN blocks, a final LayerNorm, positions
    counted back from each row's last real token (a history means the same whatever the batch width).
    layout "recbole": RecBole's SASRec layer by layer: LayerNorm on the embedding sum, post-LN
    blocks, positions counted from the start, Linear weights drawn from N(0, 0.02). On ML-100k it
    came closer to RecBole's validation NDCG than "pre-ln" with the same dropout
    (results/perf/sasrec_screening.jsonl)."""

    def __init__(self, n_tokens: int, max_len: int, hidden: int, layers: int, heads: int, dropout: float, causal: bool,
                 attn_dropout: float = 0.0, layout: str = "pre-ln"):
        super().__init__()
        check_layout(layout, type(self).__name__)
        self.item = nn.Embedding(n_tokens, hidden, padding_idx=0)
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = FastDropout(dropout)
        post = layout == "recbole"
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout, attn_dropout, post) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)  # on the output (pre-ln), on the embeddings (recbole)
        self.causal, self.layout = causal, layout
        nn.init.normal_(self.item.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        if post:
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """States (b, n, hidden) at every position, or (b, hidden) at each row's last real token."""
        b, n = tokens.shape
        lengths = (tokens > 0).sum(1)
        if self.layout == "recbole":
            x = self.drop(self.norm(self.item(tokens) + self.pos(torch.arange(n, device=tokens.device))))
        else:
            back = (lengths[:, None] - 1 - torch.arange(n, device=tokens.device)).clamp(min=0)  # padding gets any valid position
            x = self.drop(self.item(tokens) * math.sqrt(self.item.embedding_dim) + self.pos(back))
        mask = None
        if not self.causal:  # every real key; key 0 too, so an empty row cannot turn into NaN
            keys = (tokens > 0) | (torch.arange(n, device=tokens.device) == 0)
            mask = keys[:, None, :]
        last = (lengths - 1).clamp(min=0)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last if last_only and i == len(self.blocks) - 1 else None)
        if self.layout == "pre-ln":
            x = self.norm(x)
        return x[:, 0] if last_only else x


@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without a gain. One rule for training and for replaying a
    logged curve with another patience (`bench.perf.sasrec`)."""

    patience: int
    best: float = -1.0
    bad: int = 0

    def improved(self, value: float) -> bool:
        if value > self.best:
            self.best, self.bad = value, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience


def ema_fn(decay: float):
    """Exponential moving average of the weights for `AveragedModel`, with the usual warm-up: decay
    (1 + t) / (10 + t) at step t while that is lower, so the average forgets the random init. For
    decay 0.999 that lasts ~9000 steps (40 ML-100k epochs at batch 16), during which the average
    covers roughly the last tenth of training."""
    def update(avg: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor) -> None:
        t = int(steps)
        torch._foreach_lerp_(avg, current, 1.0 - min(decay, (1 + t) / (10 + t)))
    return update


def train_with_early_stopping(model, net: nn.Module, split: Split, ctx: FitContext, step, batches,
                              epochs: int, patience: int, lr: float, weight_decay: float, eval_every: int = 1,
                              ema: float = 0.0, rng: np.random.Generator | None = None) -> None:
    """Adam over `batches()` (a fresh iterable per epoch) calling `step(batch) -> loss`; keep the
    weights with the best validation NDCG@10; stop after `patience` evaluations without gain.
    With `ema` > 0 the weights validated and kept are a moving average of the trained ones (decay
    `ema` a step), whose validation curve is smoother, so early stopping reads less noise.
    `rng`: the generator `batches` and `step` draw from. With `ctx.extra["checkpoint_key"]` the
    training state is saved after every epoch and a stopped run resumes where it was (`resume`)."""
    # fused: one kernel for all parameters; the per-tensor loop cost ~7 ms a step on this CPU, 1-2 fused.
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    average = AveragedModel(net, multi_avg_fn=ema_fn(ema)) if ema > 0 else None
    stopping, best_state = EarlyStopping(patience), None
    model.epochs_run, model.resumed_at_epoch, model.fit_seconds_before_resume = 0, None, 0.0
    key, path, gens = ctx.extra.get("checkpoint_key"), ctx.workdir / resume.FILE, resume.generators(net, rng)
    saved = resume.load(path, key, gens) if key else None
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        if average is not None:
            average.load_state_dict(saved["average"])
        stopping.best, stopping.bad = saved["stopping"]
        best_state, model.best_epoch, model.epochs_run = saved["best_state"], saved["best_epoch"], saved["epoch"]
        model.resumed_at_epoch, model.fit_seconds_before_resume = saved["epoch"] + 1, saved["seconds"]
        ctx.curves.extend(saved["curves"])
        tqdm.write(f"{type(model).__name__}: resuming at epoch {model.resumed_at_epoch} from {path}")
    started = time.perf_counter() - model.fit_seconds_before_resume
    bar = tqdm(range(model.epochs_run + 1, epochs + 1), desc=f"{type(model).__name__} epochs", leave=False)
    for epoch in bar:
        net.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for batch in batches():
            loss = step(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update_parameters(net)
            total, n = total + loss.item(), n + 1
        model.epochs_run = epoch
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "epoch_seconds": round(time.perf_counter() - t0, 3)}
        if epoch % eval_every == 0 or epoch == epochs:
            trained = None
            if average is not None:  # validate (and keep) the averaged weights, then train on from the current ones
                trained = copy.deepcopy(net.state_dict())
                net.load_state_dict(average.module.state_dict())
            net.eval()
            with torch.no_grad():
                row["valid_NDCG@10"] = validation_ndcg10(model, split, ctx.valid_users)
            if stopping.improved(row["valid_NDCG@10"]):
                best_state, model.best_epoch = copy.deepcopy(net.state_dict()), epoch
            if trained is not None:
                net.load_state_dict(trained)
        ctx.curves.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", valid=f"{stopping.best:.4f}")
        if stopping.stop:
            break
        if key and epoch < epochs:
            resume.save(path, key, {
                "epoch": epoch, "epochs": epochs, "net": net.state_dict(), "opt": opt.state_dict(),
                "average": average.state_dict() if average is not None else None,
                "stopping": (stopping.best, stopping.bad), "best_state": best_state,
                "best_epoch": getattr(model, "best_epoch", None), "curves": list(ctx.curves),
                "seconds": time.perf_counter() - started}, gens)
    if key:
        resume.clear(path)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    model.best_valid_ndcg10 = stopping.best

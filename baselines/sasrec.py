"""SASRec (Kang & McAuley 2018) trained on all positions at once with full-softmax cross-entropy
(the SASRec+ / gSASRec practice), not on one prefix per row as RecBole does."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from baselines.neural import (SequenceEncoder, check_layout, length_batches, pad_right, random_batches,
                              train_with_early_stopping, windows)
from bench.precision import autocast, resolve_bf16, resolve_device
from bench.errors import BenchError
from bench.models import FitContext
from bench.split import Split


class SASRec:
    causal = True

    def __init__(self, hidden: int = 64, layers: int = 2, heads: int = 1, max_len: int = 200, dropout: float = 0.2,
                 attn_dropout: float = 0.0, layout: str = "pre-ln",
                 lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 128, epochs: int = 200,
                 patience: int = 5, eval_every: int = 1, ema: float = 0.0, all_windows: bool = False,
                 stride: int | None = None, batching: str = "length", bf16: bool | str = False, threads: int | None = None,
                 device: str = "auto"):
        self.hidden, self.layers, self.heads, self.max_len, self.dropout = hidden, layers, heads, max_len, dropout
        self.lr, self.weight_decay, self.batch_size, self.epochs = lr, weight_decay, batch_size, epochs
        # bf16 measured slower at these sizes even where it is native; "auto" follows the hardware.
        self.device = resolve_device(device)  # "auto": the GPU where there is one; the stored config keeps "auto"
        self.patience, self.eval_every, self.threads = patience, eval_every, threads
        self.bf16 = resolve_bf16(bf16, self.device)
        self.all_windows, self.attn_dropout, self.layout = all_windows, attn_dropout, layout
        self.stride, self.ema = stride, ema
        # "length": batches of similar length (little padding, ~2x faster); "random": uniform batches
        self.batching = batching
        name = type(self).__name__.lower()
        check_layout(layout, name)
        if batching not in ("length", "random"):
            raise BenchError(f"{name}: batching {batching!r} is not 'length' or 'random'")
        if stride is not None and not (all_windows and 1 <= stride <= max_len):
            raise BenchError(f"{name}: stride {stride!r} needs all_windows: true and 1 <= stride <= max_len ({max_len})")

    def _adapt_items(self, split: Split, ctx: FitContext) -> None:
        """Where a subclass changes the item table before training (LLM-initialised SASRec)."""

    def _train_width(self) -> int:
        return self.max_len + 1  # max_len inputs and the targets shifted by one

    def _tokens(self, split: Split) -> int:
        return split.n_items + 1

    def fit(self, split: Split, ctx: FitContext) -> None:
        torch.set_num_threads(self.threads or os.cpu_count() or 1)
        torch.manual_seed(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        self.n_items = split.n_items
        self.net = SequenceEncoder(self._tokens(split), self.max_len + 1, self.hidden, self.layers, self.heads,
                                   self.dropout, self.causal, self.attn_dropout, self.layout)
        self._adapt_items(split, ctx)
        self.net.to(self.device)
        seqs = [s for s in split.train if len(s) >= 2]
        lengths = np.array([min(len(s), self._train_width()) for s in seqs])
        targets = lengths - 1  # without windows: every transition of the last window
        if self.all_windows:
            seqs, targets = windows(seqs, self._train_width(), self.stride)
            lengths = np.array([len(s) for s in seqs])

        def batches():
            order = (length_batches(lengths, self.batch_size, rng) if self.batching == "length"
                     else random_batches(len(lengths), self.batch_size, rng))
            for idx in order:
                yield [seqs[i] for i in idx], torch.from_numpy(targets[idx]).to(self.device)

        train_with_early_stopping(self, self.net, split, ctx, lambda b: self.loss(b, rng), batches, self.epochs,
                                  self.patience, self.lr, self.weight_decay, self.eval_every, self.ema, rng)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.net.item.weight[1 : self.n_items + 1].T

    def loss(self, batch: tuple[list[np.ndarray], torch.Tensor], rng) -> torch.Tensor:
        """`batch`: pieces of histories and how many of each piece's last transitions to train on."""
        pieces, n_targets = batch
        tok = pad_right(pieces, self._train_width()).to(self.device)
        # The last real token of each row is an input only where it is followed by another.
        inp, tgt = tok[:, :-1] * (tok[:, 1:] > 0), tok[:, 1:]
        first = (tok > 0).sum(1) - 1 - n_targets  # column of each row's first trained target
        with autocast(self.bf16, self.device):
            h = self.net(inp)
        keep = (tgt > 0) & (torch.arange(tgt.shape[1], device=tgt.device) >= first[:, None])
        return self.next_item_loss(h[keep], tgt[keep] - 1)

    def next_item_loss(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the next `items` from their positions' states `h` (a subclass may
        predict items another way: baselines/semantic_ids.py)."""
        with autocast(self.bf16, self.device):
            logits = self.item_logits(h)  # only at real positions: the full-softmax head is the costly part
        return F.cross_entropy(logits.float(), items)

    def _final_state(self, histories: list[np.ndarray]) -> torch.Tensor:
        return self.net(pad_right(histories, self.max_len).to(self.device), last_only=True)

    @torch.no_grad()
    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        self.net.eval()
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        # Similar lengths together: a batch is only as wide as its longest history.
        for idx in length_batches(np.array([len(h) for h in histories]), 128):
            out[idx] = self.item_logits(self._final_state([histories[i] for i in idx])).float().cpu().numpy()
        return out

    def info(self) -> dict:
        return {"epochs_run": self.epochs_run, "best_epoch": getattr(self, "best_epoch", None),
                "best_valid_NDCG@10": self.best_valid_ndcg10, "resumed_at_epoch": self.resumed_at_epoch,
                "fit_seconds_before_resume": round(self.fit_seconds_before_resume, 3),
                "parameters": sum(p.numel() for p in self.net.parameters()), "device": self.device}

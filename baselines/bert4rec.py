"""BERT4Rec (Sun et al. 2019): bidirectional encoder trained with the cloze objective and
full-softmax cross-entropy; at inference a mask token after the history is scored."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from baselines.neural import pad_right
from bench.errors import BenchError
from bench.precision import autocast
from baselines.sasrec import SASRec


class BERT4Rec(SASRec):
    causal = False

    def __init__(self, mask_prob: float = 0.2, **kwargs):
        kwargs.setdefault("max_len", 200)
        # Length-bucketed batches cost BERT4Rec on ML-100k (seed 0: validation NDCG@10 0.098 vs 0.106,
        # test Recall@10 0.145 vs 0.175). Likely why: a cloze batch's loss is a mean over its masked
        # items, so a batch of short histories weighs each of its items several times more.
        kwargs.setdefault("batching", "random")
        if kwargs.get("stride") is not None:
            raise BenchError("bert4rec: stride is for causal training; the cloze objective masks items at random")
        super().__init__(**kwargs)
        self.mask_prob = mask_prob

    def _train_width(self) -> int:
        return self.max_len

    def _tokens(self, split) -> int:
        return split.n_items + 2  # padding, items, mask

    def loss(self, batch: tuple[list[np.ndarray], torch.Tensor], rng) -> torch.Tensor:
        pieces = batch[0]  # every piece's items are candidates for masking
        tok = pad_right(pieces, self._train_width()).to(self.device)
        real = tok > 0
        masked = torch.from_numpy(rng.random(tok.shape) < self.mask_prob).to(self.device) & real
        # Every sequence gets its last item masked half of the time: the inference task.
        rows, last = torch.arange(len(pieces), device=tok.device), (real.sum(1) - 1).clamp(min=0)
        masked[rows, last] |= torch.from_numpy(rng.random(len(pieces)) < 0.5).to(self.device) & real[rows, last]
        nothing = ~masked.any(dim=1) & real.any(dim=1)
        masked[rows[nothing], last[nothing]] = True
        inp = tok.masked_fill(masked, self.n_items + 1)
        with autocast(self.bf16, self.device):
            logits = self.item_logits(self.net(inp)[masked])
        return F.cross_entropy(logits.float(), tok[masked] - 1)

    def _final_state(self, histories):
        return self.net(pad_right(histories, self.max_len, extra=[self.n_items + 1]).to(self.device), last_only=True)

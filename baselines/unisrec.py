"""UniSRec (Hou et al., KDD 2022) on the bundled LLM's item vectors: a universal item representation
from text, a SASRec-style encoder pretrained across domains, then adapted to the target.

- Items: the frozen LLM vector of each item's text (baselines/llm_items.py) through a mixture of
  `experts` parametric-whitening experts, `(x - b_k) W_k`, mixed by a softmax gate on `x`. With
  `ids: true` (the paper's transductive mode) a trainable ID embedding is added to it.
- Pretraining (`pretrain`: the same stage-I mixture CALRec uses, a domain drawn per batch by
  n_users ** exponent): sequence-item contrast (the encoder's state against its next item, the
  batch's other next items as negatives) plus sequence-sequence contrast (the state against that of
  the same sequence with items dropped at `item_drop`), both cosine over `tau`. Only training
  sequences of every domain are read.
- Finetuning on the target: softmax over every item of cosine(state, item) / tau, the encoder frozen
  (`freeze_encoder`, as the paper does) so only the adaptor (and the IDs) adapt, with SASRec's early
  stopping on validation NDCG@10.

Everything else (windows, batching, the training loop, prediction) is our SASRec's.
"""
from __future__ import annotations

import time
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from baselines.llm_items import item_vectors
from baselines.neural import pad_right
from baselines.sasrec import SASRec
from bench.datasets import entry_spec, load_dataset
from bench.models import FitContext
from bench.split import Split, leave_one_out


class MoEItems(nn.Module):
    """Item table = gate-weighted whitened experts of the text vectors (+ an ID embedding)."""

    def __init__(self, ids: nn.Embedding, width: int, experts: int, with_ids: bool):
        super().__init__()
        hidden = ids.embedding_dim
        self.embedding_dim, self.with_ids = hidden, with_ids
        self.ids = ids if with_ids else None
        self.bias = nn.Parameter(torch.zeros(experts, width))
        self.proj = nn.Parameter(torch.randn(experts, width, hidden) * 0.02 / np.sqrt(width / hidden))
        self.gate = nn.Linear(width, experts, bias=False)
        nn.init.zeros_(self.gate.weight)  # equal experts at first
        self.register_buffer("text", torch.zeros(1, width))

    def use(self, vectors: np.ndarray) -> None:
        """The catalog whose items the table holds (pretraining switches domain per batch)."""
        v = torch.from_numpy(vectors).float().to(self.bias.device)
        self.text = (v - v.mean(0)) / v.std(0).clamp_min(1e-6)

    @property
    def weight(self) -> torch.Tensor:
        x = self.text
        experts = torch.einsum("nd,kdh->nkh", x, self.proj) - torch.einsum("kd,kdh->kh", self.bias, self.proj)
        items = (self.gate(x).softmax(-1)[..., None] * experts).sum(1)
        if self.ids is not None and self.ids.num_embeddings == len(x) + 1:
            items = items + self.ids.weight[1:]
        return torch.cat([torch.zeros_like(items[:1]), items])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.weight)


class UniSRec(SASRec):
    def __init__(self, backbone: str = "bundled:smollm2-135m", ids: bool = False,
                 experts: Annotated[int, Field(ge=1)] = 8, tau: Annotated[float, Field(gt=0)] = 0.07,
                 pretrain: dict | None = None, item_drop: Annotated[float, Field(ge=0, lt=1)] = 0.2,
                 lambda_ss: Annotated[float, Field(ge=0)] = 1e-3, freeze_encoder: bool = True, **sasrec):
        super().__init__(**sasrec)
        self.backbone, self.ids, self.experts, self.tau = backbone, ids, experts, tau
        self.pretrain = {"datasets": [], "steps": 0, "exponent": 0.3, "batch_size": 64, "lr": 1e-3, **(pretrain or {})}
        self.item_drop, self.lambda_ss, self.freeze_encoder = item_drop, lambda_ss, freeze_encoder

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        w = self.net.item.weight[1 : self.n_items + 1]
        return F.normalize(h, dim=-1) @ F.normalize(w, dim=-1).T / self.tau

    def _adapt_items(self, split: Split, ctx: FitContext) -> None:
        cache = ctx.extra.get("shared_cache", ctx.workdir)
        target = item_vectors(split, self.backbone, cache)
        self.net.item = MoEItems(self.net.item, target.shape[1], self.experts, self.ids)
        self.pretrain_info = {}
        if self.pretrain["steps"]:
            self.pretrain_info = self._pretrain(split, target, cache, ctx)
        self.net.item.use(target)
        if self.freeze_encoder and self.pretrain["steps"]:
            for name, p in self.net.named_parameters():
                p.requires_grad_(name.startswith("item."))

    def _domains(self, split: Split, target: np.ndarray, cache) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
        out = []
        for entry in self.pretrain["datasets"]:
            spec, params = entry_spec(entry)
            other = split if spec == split.dataset and not params else leave_one_out(load_dataset(spec, **params))
            vectors = target if other is split else item_vectors(other, self.backbone, cache)
            out.append((spec, [s for s in other.train if len(s) >= 2], vectors))
        return out

    def _pretrain(self, split: Split, target: np.ndarray, cache, ctx: FitContext) -> dict:
        """Sequence-item and sequence-sequence contrast over the domains' training sequences."""
        cfg = self.pretrain
        domains = self._domains(split, target, cache) or [(split.dataset, [s for s in split.train if len(s) >= 2], target)]
        sizes = np.array([len(seqs) for _, seqs, _ in domains], dtype=np.float64) ** cfg["exponent"]
        rng = np.random.default_rng([ctx.seed, 7])
        net = self.net.to(self.device)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"])
        t0, losses = time.perf_counter(), []
        net.train()
        for step in tqdm(range(cfg["steps"]), desc="UniSRec pretraining", leave=False):
            d = rng.choice(len(domains), p=sizes / sizes.sum())
            _, seqs, vectors = domains[d]
            net.item.use(vectors)
            rows = [seqs[i] for i in rng.choice(len(seqs), size=cfg["batch_size"])]
            ends = [int(rng.integers(2, len(s) + 1)) for s in rows]  # a random prefix and its next item
            hist = [s[max(0, e - 1 - self.max_len) : e - 1] for s, e in zip(rows, ends)]
            nxt = torch.tensor([int(s[e - 1]) + 1 for s, e in zip(rows, ends)], device=self.device)
            kept = [h[rng.random(len(h)) >= self.item_drop] if len(h) > 1 else h for h in hist]
            kept = [k if len(k) else h[-1:] for k, h in zip(kept, hist)]
            state = F.normalize(net(pad_right(hist, self.max_len).to(self.device), last_only=True), dim=-1)
            view = F.normalize(net(pad_right(kept, self.max_len).to(self.device), last_only=True), dim=-1)
            items = F.normalize(net.item.weight[nxt], dim=-1)
            same = nxt[:, None] == nxt[None, :]  # another row with the same next item is not a negative
            logits = (state @ items.T / self.tau).masked_fill(same & ~torch.eye(len(nxt), dtype=torch.bool,
                                                                                  device=self.device), float("-inf"))
            labels = torch.arange(len(nxt), device=self.device)
            loss = F.cross_entropy(logits, labels) + self.lambda_ss * F.cross_entropy(state @ view.T / self.tau, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss))
            if (step + 1) % 100 == 0:
                ctx.curves.append({"pretrain_step": step + 1, "pretrain_loss": float(np.mean(losses[-100:]))})
        return {"pretrain_seconds": round(time.perf_counter() - t0, 1), "pretrain_domains": [n for n, _, _ in domains],
                "pretrain_last_loss": round(float(np.mean(losses[-100:])), 4) if losses else None}

    def info(self) -> dict:
        return {**super().info(), "backbone": self.backbone, "ids": self.ids, "experts": self.experts,
                **self.pretrain_info}

"""Generative retrieval over semantic IDs, in the manner of TIGER (Rajput et al. 2023), on our SASRec.

- Each item's LLM vector (baselines/llm_items.py) is quantised by residual k-means into `levels`
  codes of up to `codes` values, plus a last code that tells apart the items sharing all the others
  (TIGER's collision code). That tuple is the item's semantic ID: items with similar text share
  its first codes.
- Our SASRec encoder reads the history, each item entering as the sum of its codes' embeddings (no
  item-ID table, so what is learnt for one code serves every item that has it).
- The next item is generated code by code: level l's distribution is an MLP over the sequence state
  plus the embeddings of the codes decoded so far, normalised over the codes that continue some
  catalog item (constrained decoding, as CALRec's item trie), so every ID it can emit is an item.
- Items are ranked by the exact log-probability of their whole ID, log p(c1) + log p(c2 | c1) + ...,
  computed for every catalog item: what an exhaustive constrained beam search would rank.

A simplification of TIGER: its decoder is a transformer over code tokens in an encoder-decoder
model, and its codes come from an RQ-VAE; here one causal encoder over items, a per-level MLP
decoder and residual k-means (scikit-learn), at about SASRec's cost.
"""
from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from pydantic import Field
from torch import nn

from baselines.llm_items import item_vectors
from baselines.sasrec import SASRec
from bench.models import FitContext
from bench.split import Split


def residual_kmeans(vectors: np.ndarray, levels: int, codes: int, seed: int) -> np.ndarray:
    """(n, levels + 1) int64: each row's residual k-means codes, then its collision code (its rank
    among the rows sharing the first `levels` codes, in row order)."""
    from sklearn.cluster import KMeans

    residual = ((vectors - vectors.mean(0)) / np.maximum(vectors.std(0), 1e-6)).astype(np.float64)
    out = []
    for level in range(levels):
        k = min(codes, len(np.unique(residual.round(6), axis=0)))
        km = KMeans(n_clusters=k, n_init=4, random_state=seed + level).fit(residual)
        out.append(km.labels_.astype(np.int64))
        residual = residual - km.cluster_centers_[km.labels_]
    ids = np.stack(out, 1)
    seen: dict[tuple, int] = {}
    collision = np.empty(len(ids), dtype=np.int64)
    for i, row in enumerate(map(tuple, ids)):
        collision[i] = seen.get(row, 0)
        seen[row] = collision[i] + 1
    return np.concatenate([ids, collision[:, None]], 1)


class CodeItems(nn.Module):
    """Input embeddings: token i + 1 (item i) is the sum of its codes' embeddings; 0 (padding) is zero."""

    def __init__(self, ids: torch.Tensor, sizes: list[int], hidden: int):
        super().__init__()
        self.embedding_dim = hidden
        self.register_buffer("ids", torch.cat([torch.zeros_like(ids[:1]), ids]))  # row 0: padding
        self.tables = nn.ModuleList(nn.Embedding(k, hidden) for k in sizes)
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        codes = self.ids[tokens]
        x = sum(t(codes[..., j]) for j, t in enumerate(self.tables))
        return x * (tokens > 0)[..., None]


class CodeDecoder(nn.Module):
    """p(c_l | state, c_<l) for every level l, each normalised over the codes that continue an item."""

    def __init__(self, ids: torch.Tensor, sizes: list[int], hidden: int):
        super().__init__()
        self.register_buffer("ids", ids)
        self.codes = nn.ModuleList(nn.Embedding(k, hidden) for k in sizes[:-1])  # the decoded prefix's codes
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, k)) for k in sizes)
        # per level: the distinct prefixes (first `level` codes), each item's prefix among them, and
        # which codes continue each prefix
        for level, size in enumerate(sizes):
            if level:
                prefixes, inverse = torch.unique(ids[:, :level], dim=0, return_inverse=True)
            else:  # one prefix, the empty one
                prefixes, inverse = ids[:1, :0], torch.zeros(len(ids), dtype=torch.long)
            allowed = torch.zeros(len(prefixes), size, dtype=torch.bool)
            allowed[inverse, ids[:, level]] = True
            self.register_buffer(f"prefix_of{level}", inverse.reshape(-1))
            self.register_buffer(f"children{level}", allowed)
            # A prefix with one child adds log 1 = 0: ranking every item computes only those that branch.
            branching = (allowed.sum(1) > 1).nonzero().squeeze(1)
            where = torch.full((len(prefixes),), -1, dtype=torch.long)
            where[branching] = torch.arange(len(branching))
            self.register_buffer(f"branching{level}", branching)
            self.register_buffer(f"item_branch{level}", where[inverse.reshape(-1)])
            self.register_buffer(f"prefixes{level}", prefixes)

    def _query(self, state: torch.Tensor, level: int, codes: torch.Tensor) -> torch.Tensor:
        """The state plus the summed embeddings of the codes decoded before `level` (`codes[..., :level]`)."""
        return state + sum(self.codes[j](codes[..., j]) for j in range(level)) if level else state

    def log_prob(self, state: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """log p(item's ID | state) for pairs (state row, item index): teacher-forced, code by code."""
        codes, total = self.ids[item], 0.0
        for level, head in enumerate(self.heads):
            logits = head(self._query(state, level, codes)).float()
            allowed = getattr(self, f"children{level}")[getattr(self, f"prefix_of{level}")[item]]
            logits = logits.masked_fill(~allowed, float("-inf"))
            total = total + logits.log_softmax(-1).gather(1, codes[:, level : level + 1]).squeeze(1)
        return total

    def all_items(self, state: torch.Tensor) -> torch.Tensor:
        """(rows, items): log p of every catalog item's ID, each level computed once per prefix."""
        out = torch.zeros(len(state), len(self.ids), device=state.device)
        for level, head in enumerate(self.heads):
            branching = getattr(self, f"branching{level}")
            if not len(branching):
                continue
            prefixes = getattr(self, f"prefixes{level}")[branching]
            logits = head(self._query(state[:, None, :], level, prefixes[None])).float()  # (rows, prefixes, codes)
            logp = logits.masked_fill(~getattr(self, f"children{level}")[branching][None], float("-inf")).log_softmax(-1)
            at = getattr(self, f"item_branch{level}")
            items = (at >= 0).nonzero().squeeze(1)
            out[:, items] += logp[:, at[items], self.ids[items, level]]
        return out


class SemanticIDRec(SASRec):
    def __init__(self, backbone: str = "bundled:smollm2-135m", levels: Annotated[int, Field(ge=1)] = 3,
                 codes: Annotated[int, Field(ge=2)] = 32, **sasrec):
        super().__init__(**sasrec)
        self.backbone, self.levels, self.codes = backbone, levels, codes

    def _adapt_items(self, split: Split, ctx: FitContext) -> None:
        vectors = item_vectors(split, self.backbone, ctx.extra.get("shared_cache", ctx.workdir))
        ids = torch.from_numpy(residual_kmeans(vectors, self.levels, self.codes, ctx.seed))
        self.sizes = [int(ids[:, j].max()) + 1 for j in range(ids.shape[1])]
        self.net.item = CodeItems(ids, self.sizes, self.hidden)
        self.net.decoder = CodeDecoder(ids, self.sizes, self.hidden)  # in `net`: trained, averaged, moved with it

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.net.decoder.all_items(h.float())

    def next_item_loss(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The next item's ID generated code by code, instead of SASRec's softmax over items."""
        return -self.net.decoder.log_prob(h.float(), items).mean()

    def info(self) -> dict:
        ids = self.net.decoder.ids
        return {**super().info(), "backbone": self.backbone, "code_sizes": self.sizes,
                "items_with_a_collision_code": int((ids[:, -1] > 0).sum())}

"""SASRec over LLM item vectors, in the manner of LLM-ESR and LLMEmb: each item's text through the
frozen bundled LLM once (baselines/llm_items.py), then either

  add   the item table is the ID embedding plus a trainable linear adaptor of the standardised LLM
        vector (the two views fused, both trained end to end with the usual full-softmax loss), or
  init  the ID table starts from the LLM vectors' top principal components, scaled to the ID
        embeddings' initial spread, and trains as plain SASRec from there.

Everything else is our SASRec (baselines/sasrec.py), so a row against it measures the text alone.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.llm_items import item_vectors
from baselines.sasrec import SASRec
from bench.errors import BenchError
from bench.models import FitContext
from bench.split import Split

FUSIONS = ("add", "init")


class FusedItems(nn.Module):
    """An item table that is ID embedding + adaptor(LLM vector); row 0 (padding) stays zero."""

    def __init__(self, ids: nn.Embedding, vectors: np.ndarray):
        super().__init__()
        self.ids, self.embedding_dim = ids, ids.embedding_dim
        v = torch.from_numpy(vectors).float()
        self.register_buffer("text", (v - v.mean(0)) / v.std(0).clamp_min(1e-6))
        self.adaptor = nn.Linear(v.shape[1], ids.embedding_dim)
        nn.init.normal_(self.adaptor.weight, std=0.02 / np.sqrt(v.shape[1] / ids.embedding_dim))
        nn.init.zeros_(self.adaptor.bias)

    @property
    def weight(self) -> torch.Tensor:
        fused = self.ids.weight[1:] + self.adaptor(self.text)
        return torch.cat([torch.zeros_like(fused[:1]), fused])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.weight)


class LLMSASRec(SASRec):
    def __init__(self, backbone: str = "bundled:smollm2-135m", fusion: str = "add", **sasrec):
        super().__init__(**sasrec)
        if fusion not in FUSIONS:
            raise BenchError(f"llm-sasrec: fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
        self.backbone, self.fusion = backbone, fusion

    def _adapt_items(self, split: Split, ctx: FitContext) -> None:
        vectors = item_vectors(split, self.backbone, ctx.extra.get("shared_cache", ctx.workdir))
        ids = self.net.item
        if self.fusion == "add":
            self.net.item = FusedItems(ids, vectors)
            return
        centred = vectors - vectors.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pcs = np.zeros((len(vectors), ids.embedding_dim), dtype=np.float64)
        k = min(ids.embedding_dim, len(vt))  # a catalog smaller than the width has fewer components
        pcs[:, :k] = centred @ vt[:k].T
        pcs *= float(ids.weight[1:].detach().std()) / max(float(pcs.std()), 1e-12)
        with torch.no_grad():
            ids.weight[1 : split.n_items + 1] = torch.from_numpy(pcs).float()

    def info(self) -> dict:
        return {**super().info(), "backbone": self.backbone, "fusion": self.fusion}

"""Item vectors from the bundled LLM, for the text-aware baselines (LLM-initialised SASRec, UniSRec):
each item's text ("Title (Year)", the article restored as CALRec's natural titles do) through the
frozen backbone, its last hidden states mean-pooled over the text's tokens.

Computed once per (backbone, dataset version, text) and kept in the run store's shared cache with a
sha256 beside it: an entry whose bytes do not match it, or that cannot be read, is rebuilt with a
line saying so, never used.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.execute.store import atomic_write_checked, read_checked
from bench.split import Split
from bench.text import render_compact
from calrec.backbone import load_backbone
from calrec.text import natural_title


def item_texts(split: Split) -> list[str]:
    fields = [k for k in ("Title", "Year") if split.item_text and k in split.item_text[0]] or None
    return [render_compact({k: natural_title(v) if k == "Title" else v for k, v in a.items()}, fields)
            for a in split.item_text]


@torch.no_grad()
def encode(texts: list[str], backbone: str, batch: int = 32) -> np.ndarray:
    """(len(texts), hidden) float32: mean of the last hidden states over each text's tokens."""
    model, tok = load_backbone(backbone, texts)
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = []
    for s in tqdm(range(0, len(texts), batch), desc="LLM item vectors", unit="batch", leave=False):
        ids = [tok(" " + t, add_special_tokens=False).input_ids[:48] or [pad] for t in texts[s : s + batch]]
        width = max(len(i) for i in ids)
        x = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
        h = model.model(input_ids=x, attention_mask=mask).last_hidden_state.float()
        out.append(((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy())
    return np.concatenate(out).astype(np.float32)


def item_vectors(split: Split, backbone: str, cache: Path | None) -> np.ndarray:
    """The split's item vectors, from `cache` where an intact entry exists, else computed (and stored)."""
    texts = item_texts(split)
    key = {"backbone": backbone, "data": split.version, "texts": hashlib.sha1(json.dumps(texts).encode()).hexdigest()[:16],
           "pooling": "mean-last"}
    path = None
    if cache is not None:
        path = cache / "llm-item-vectors" / f"{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.npy"
        data, why = read_checked(path)
        if data is not None:
            try:
                vectors = np.load(io.BytesIO(data), allow_pickle=False)
                if vectors.shape[0] == len(texts) and np.isfinite(vectors).all():
                    return vectors
                why = "it does not fit the catalog"
            except ValueError as e:
                why = f"unreadable ({e})"
        if why:
            tqdm.write(f"{path}: {why}; rebuilding it")
    vectors = encode(texts, backbone)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, vectors, allow_pickle=False)
        atomic_write_checked(path, buf.getvalue())
    return vectors

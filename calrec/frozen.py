"""The frozen layers' output, computed once and trained on for many epochs (`frozen_cache: true`).

With `train_layers: k` the embeddings and the bottom L - k decoder layers never change; with
`examples: epochs` every window of a domain is fixed and SmolLM2 has no dropout, so the bottom's
output for a window is the same every epoch. It is computed once per (backbone, windows, text
settings, data version), in the training precision (bf16 where native), and each step runs only
the top k layers on it: from the layer FLOPs, ~3.2x faster per token at k = 4 than running the
bottom every step (its forward, ~L - k layer units, against 3k units of the top's forward and
backward).

Windows are every (user, target position) of `calrec.train.epoch_positions`; the item tower's input
(an item text alone) is cached per catalog item. With `shuffle_history` each window's history is
shuffled once when the cache is built (uncached, it is reshuffled at every draw).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.precision import autocast
from calrec.cache import read_cache, write_cache
from calrec.text import PromptBuilder, PromptTokens
from calrec.towers import bottom_states, pad_batch


@dataclass
class Ragged:
    """Variable-length rows of (tokens, width) states in one flat tensor."""

    data: torch.Tensor
    offsets: torch.Tensor  # row r is data[offsets[r]:offsets[r + 1]]

    def __getitem__(self, r: int) -> torch.Tensor:
        return self.data[int(self.offsets[r]) : int(self.offsets[r + 1])]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @staticmethod
    def of(rows: list[torch.Tensor], width: int, dtype) -> "Ragged":
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        data = torch.cat(rows) if rows else torch.zeros(0, width, dtype=dtype)
        return Ragged(data, offsets)

    def consistent(self, lengths: list[int]) -> bool:
        return len(self) == len(lengths) and bool((self.offsets.diff() == torch.tensor(lengths)).all()) \
            and int(self.offsets[-1]) == len(self.data)


@torch.no_grad()
def compute_states(model, rows: list[list[int]], top: int, pad: int, bf16: bool, device: str, desc: str,
                   batch: int = 16) -> Ragged:
    """Bottom states of every token row, in the training precision, rows batched by length."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
    out: list[torch.Tensor | None] = [None] * len(rows)
    for s in tqdm(range(0, len(order), batch), desc=desc, leave=False, unit="batch"):
        chunk = order[s : s + batch]
        ids, mask = (t.to(device) for t in pad_batch([rows[r] for r in chunk], pad))
        with autocast(bf16, device):
            h = bottom_states(model, ids, mask, top)
        for k, r in enumerate(chunk):
            out[r] = h[k, : len(rows[r])].to(dtype).cpu()
    return Ragged.of(out, model.config.hidden_size, dtype)


@dataclass
class FrozenStates:
    """A domain's cached windows: each window's prompt (target included) and bottom states, and
    each catalog item's bottom states for the item tower."""

    prompts: list[PromptTokens]
    windows: Ragged
    items: Ragged
    top: int


def cache_key(builder: PromptBuilder, positions: np.ndarray, data_version: str, top: int, bf16: bool,
              model_name: str, shuffle_seed: int | None, code: str | None) -> dict:
    """What the cached states depend on: the backbone, the windows and their text, the frozen
    depth, the precision, the data (and under a harness run, the code)."""
    windows = hashlib.sha1(np.ascontiguousarray(positions).tobytes()).hexdigest()[:16]
    texts = hashlib.sha1(json.dumps(builder.items).encode()).hexdigest()[:16]
    key = {"backbone": model_name, "template": builder.template, "item_tokens": texts, "windows": windows,
           "max_history": builder.max_history, "max_prompt_tokens": builder.max_prompt_tokens, "top": top,
           "bf16": bf16, "data": data_version, "shuffle_seed": shuffle_seed}
    return {**key, "code": code} if code else key


def frozen_states(model, builder: PromptBuilder, train: list[np.ndarray], positions: np.ndarray, top: int, pad: int,
                  bf16: bool, device: str, key: dict, folder: Path | None, shuffle: np.random.Generator | None) -> FrozenStates:
    """The domain's FrozenStates: read from `folder` where an entry with this key is intact, else
    computed (and saved there). An entry that cannot be read or does not fit the windows is rebuilt."""
    prompts = []
    for u, t in positions:
        hist = train[u][:t]
        if shuffle is not None:
            hist = shuffle.permutation(hist)
        prompts.append(builder.user_prompt(hist, target=int(train[u][t])))
    lengths = [len(p.ids) for p in prompts]
    item_lengths = [len(builder.item_ids(i)) for i in range(len(builder.items))]
    path = None
    if folder is not None:
        path = folder / f"{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.pt"
        saved = read_cache(path, lambda b: torch.load(io.BytesIO(b), weights_only=False), key)
        if saved is not None and saved["windows"].consistent(lengths) and saved["items"].consistent(item_lengths):
            return FrozenStates(prompts, saved["windows"], saved["items"], top)
        if saved is not None:
            tqdm.write(f"{path}: does not fit the windows it is keyed by; rebuilding it")
    windows = compute_states(model, [p.ids for p in prompts], top, pad, bf16, device, "frozen layers: windows")
    items = compute_states(model, [builder.item_ids(i) for i in range(len(builder.items))], top, pad, bf16, device,
                           "frozen layers: items")
    if path is not None:
        buf = io.BytesIO()
        torch.save({"key": key, "windows": windows, "items": items}, buf)
        write_cache(path, buf.getvalue())
    return FrozenStates(prompts, windows, items, top)

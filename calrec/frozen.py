"""The frozen layers' output, computed once and trained on for many epochs (`frozen_cache: true`).

With `train_layers: k` the embeddings and the bottom L - k decoder layers never change; with
`examples: epochs` every window of a domain is fixed and SmolLM2 has no dropout, so the bottom's
output for a window is the same every epoch. It is computed once per (backbone, token rows, frozen
depth, precision, the code and libraries that compute it), in the training precision (bf16 where
native), kept in the run store's shared cache across cells, and each step runs only
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
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.precision import autocast
from calrec.backbone import decoder, layer_range, pad_batch
from calrec.cache import digest, read_cache, write_cache
from calrec.text import PromptBuilder, PromptTokens

# The code the cached states come from: loading the backbone and running its bottom layers
# (calrec/backbone.py), batching rows for that pass (this module), the autocast rule. A change
# elsewhere in calrec (losses, training, inference) leaves the states, and the cache, as they were;
# what is fed in is keyed by its tokens (`rows_digest`).
STATES_CODE = ("calrec/backbone.py", "calrec/frozen.py", "bench/precision.py")


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


def bottom_states(model, ids: torch.Tensor, mask: torch.Tensor, top: int) -> torch.Tensor:
    """The residual stream after the frozen layers (all but the top `top`), before the final norm."""
    with layer_range(model, 0, len(decoder(model).layers) - top, final_norm=False) as dec:
        return dec(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


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


def kept(folder: Path | None, key: dict, fits: Callable[[dict], bool], compute: Callable[[], dict]) -> dict:
    """What `compute()` returns (states by name), kept in `folder` (the shared cache) under `key`: read
    where an entry is intact and `fits` the rows it is keyed by, else computed (and saved there)."""
    if folder is None:
        return compute()
    path = folder / f"{digest(key)}.pt"
    saved = read_cache(path, lambda b: torch.load(io.BytesIO(b), weights_only=False), key, valid=fits)
    if saved is not None:
        return saved
    states = compute()
    buf = io.BytesIO()
    torch.save({"key": key, **states}, buf)
    write_cache(path, buf.getvalue())
    return states


def cached_states(model, rows: list[list[int]], top: int, pad: int, bf16: bool, device: str, desc: str, key: dict,
                  folder: Path | None) -> Ragged:
    """`compute_states`, kept in `folder` under `key`, the rows' tokens and the code that computes
    them, so the next cell of another row reads it (the validation prompts)."""
    key = {**key, "rows": rows_digest(rows), "top": top, "bf16": bf16, **states_code()}
    lengths = [len(r) for r in rows]
    return kept(folder, key, lambda saved: saved["states"].consistent(lengths),
                lambda: {"states": compute_states(model, rows, top, pad, bf16, device, desc)})["states"]


@dataclass
class FrozenStates:
    """A domain's cached windows: each window's prompt (target included) and bottom states, and
    each catalog item's bottom states for the item tower."""

    prompts: list[PromptTokens]
    windows: Ragged
    items: Ragged
    top: int


def cache_key(builder: PromptBuilder, positions: np.ndarray, data_version: str, top: int, bf16: bool,
              model_name: str, shuffle_seed: int | None) -> dict:
    """What the cached states depend on: the backbone, the windows and their text, the frozen
    depth, the precision, the data; `frozen_states` adds the token rows themselves and the code and
    library versions that compute them (`states_code`)."""
    windows = hashlib.sha1(np.ascontiguousarray(positions).tobytes()).hexdigest()[:16]
    texts = hashlib.sha1(json.dumps(builder.items).encode()).hexdigest()[:16]
    return {"backbone": model_name, "template": builder.template, "item_tokens": texts, "windows": windows,
            "max_history": builder.max_history, "max_prompt_tokens": builder.max_prompt_tokens, "top": top,
            "bf16": bf16, "data": data_version, "shuffle_seed": shuffle_seed}


def rows_digest(rows: list[list[int]]) -> str:
    h = hashlib.sha1()
    for r in rows:
        h.update(np.asarray(r, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


def states_code() -> dict:
    """The code behind the states (`STATES_CODE`, each file's syntax tree without docstrings, as the
    harness fingerprints code) and the libraries that run it."""
    import transformers

    from bench.execute.fingerprint import ROOT, SCHEME, code_content, fingerprint_of

    code = fingerprint_of({rel: code_content((ROOT / rel).read_bytes(), SCHEME) for rel in STATES_CODE})
    return {"code": code, "torch": torch.__version__, "transformers": transformers.__version__}


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
    item_rows = [builder.item_ids(i) for i in range(len(builder.items))]
    item_lengths = [len(r) for r in item_rows]
    key = {**key, "prompts": rows_digest([p.ids for p in prompts]), "item_rows": rows_digest(item_rows), **states_code()}
    got = kept(folder, key,
               lambda saved: saved["windows"].consistent(lengths) and saved["items"].consistent(item_lengths),
               lambda: {"windows": compute_states(model, [p.ids for p in prompts], top, pad, bf16, device,
                                                  "frozen layers: windows"),
                        "items": compute_states(model, item_rows, top, pad, bf16, device, "frozen layers: items")})
    return FrozenStates(prompts, got["windows"], got["items"], top)

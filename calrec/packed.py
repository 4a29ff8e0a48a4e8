"""Packed training steps for accelerators: every user prompt and item text of a step laid end to end
in a few rows of one fixed length, each text attending only to itself (a block-diagonal causal mask,
positions restarting at 0 per text), so both towers run in ONE forward pass with no padding.

A padded step (`calrec.towers.collate`) pads every text to the longest of its batch and runs a second,
tiny forward for the ~5-token item texts; at ~4k real tokens a step the loop is bound by the host.
Packing pays where texts are short and uneven; under this dense mask, rows much longer than the texts
compute attention between texts that never see each other (docs/scaling.md).
Packed, a step is a few (rows, length) tensors of a fixed shape (what `torch.compile` and CUDA graphs
want), and the losses read the states through flat indices built here, on the CPU, once.

`pack` is built from the padded `Batch` that `collate` makes, so spans, labels and trie masks mean
exactly what they mean there; `packed_loss` is `calrec_loss` over the packed layout, and gives the
same losses and gradients (tests/test_calrec_packed.py: fp32, within 1e-5). Under the trie, with
`BranchMasks` on the device, a step carries one row index per label instead of a (labels, V) mask
built on the host, and labels whose token is certain (a node with one child) are dropped before
the LM head: they add exactly 0 to the loss and its gradient. The top-layers-only path
on cached frozen states (calrec/frozen.py) stays padded: it is the CPU recipe's.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from calrec.backbone import decoder
from calrec.towers import Batch, LossWeights, StepShare, nonempty, weighted_losses
from calrec.trie import BranchMasks


@dataclass
class Packed:
    ids: torch.Tensor  # (R, T) every text of the step, end to end; the rest of a row is padding
    position: torch.Tensor  # (R, T) position inside its own text (0 at each text's first token)
    doc: torch.Tensor  # (R, T) which text a token belongs to (-1: padding)
    label_index: torch.Tensor  # flat (R*T) positions of the labelled tokens, in collate's order
    next_index: torch.Tensor  # (B,) flat position of the state that predicts each user's target
    # Pooling, as (flat positions, row of the pooled vector) pairs: each user's history span, its
    # history item texts, its target span, and each item text of the item tower.
    history: tuple[torch.Tensor, torch.Tensor]
    items_span: tuple[torch.Tensor, torch.Tensor]
    target: tuple[torch.Tensor, torch.Tensor]
    item: tuple[torch.Tensor, torch.Tensor]
    last: dict[str, torch.Tensor]  # span name -> (B,) flat position of the span's last token
    item_key: torch.Tensor
    item_logq: torch.Tensor
    vocab: torch.Tensor | None
    allowed: torch.Tensor | None
    labelled_items: int
    users: int  # B
    labelled_tokens: int = 0  # labels before any were dropped (L_NIG's divisor per token)
    allowed_row: torch.Tensor | None = None  # (labels,) row of each label's mask in `branch_table`
    branch_table: torch.Tensor | None = None  # BranchMasks.allowed, already on the device

    def to(self, device) -> "Packed":
        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=True)
            if isinstance(x, tuple):
                return tuple(move(v) for v in x)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x
        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    @property
    def n_tokens(self) -> int:
        return int((self.doc >= 0).sum())

    def attention_mask(self) -> torch.Tensor:
        """(R, 1, T, T) bool: a token sees the tokens before it in its own text (built on the device)."""
        t = self.doc.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=self.doc.device).tril()
        same = (self.doc[:, :, None] == self.doc[:, None, :]) & (self.doc[:, :, None] >= 0)
        # A padding row attends to itself alone, so no softmax row is empty (its states are never read).
        return ((same & causal) | torch.eye(t, dtype=torch.bool, device=self.doc.device))[:, None]


def _place(lengths: list[int], length: int) -> list[tuple[int, int]]:
    """(row, offset) of each text: first fit, longest texts first (a text longer than `length` is an error)."""
    if max(lengths) > length:
        raise ValueError(f"a text of {max(lengths)} tokens does not fit a packed row of {length} (raise calrec's pack)")
    free: list[int] = []
    at: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, f in enumerate(free) if f >= lengths[i]), None)
        if row is None:
            free.append(length)
            row = len(free) - 1
        at[i] = (row, length - free[row])
        free[row] -= lengths[i]
    return at


def pack(batch: Batch, length: int, rows: int | None = None, branches: BranchMasks | None = None) -> Packed:
    """The padded step `batch` (from `collate`, without frozen states) as packed rows of `length`
    tokens; `rows` pads the row count to a fixed number (static shapes), else as few as fit. With
    `branches` (and a trie batch), labels at one-child nodes are dropped and the rest carry the row
    of their mask in `branches.allowed`."""
    if batch.user_frozen is not None:
        raise ValueError("packed steps run the whole decoder: build the batch without frozen states")
    trie_labels = batch.label_node is not None
    if trie_labels and branches is None and batch.allowed is None:
        raise ValueError("a trie batch collated without masks needs the trie's BranchMasks to be packed")
    label_index, allowed, allowed_row, table = batch.label_index, batch.allowed, None, None
    if trie_labels and branches is not None:
        row = branches.row[batch.label_node]
        keep = row >= 0
        label_index, allowed, allowed_row, table = label_index[keep], None, row[keep], branches.allowed
    u_len = batch.user_mask.sum(1).tolist()
    i_len = batch.item_mask.sum(1).tolist()
    at = _place(u_len + i_len, length)
    n_rows = 1 + max(r for r, _ in at)
    if rows is not None:
        if rows < n_rows:
            raise ValueError(f"the step needs {n_rows} packed rows of {length}, more than the {rows} asked for")
        n_rows = rows
    ids = torch.zeros(n_rows, length, dtype=torch.long)
    position = torch.zeros(n_rows, length, dtype=torch.long)
    doc = torch.full((n_rows, length), -1, dtype=torch.long)
    starts = []  # flat position of each text's first token
    for d, ((r, off), n, src) in enumerate(zip(at, u_len + i_len, [*batch.user_ids, *batch.item_ids])):
        ids[r, off : off + n] = src[:n]
        position[r, off : off + n] = torch.arange(n)
        doc[r, off : off + n] = d
        starts.append(r * length + off)
    b = batch.user_ids.shape[0]
    u_start = torch.tensor(starts[:b])
    i_start = torch.tensor(starts[b:])

    def flat(span: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        owner, col = nonempty(span).nonzero(as_tuple=True)
        return start[owner] + col, owner

    def last(span: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        return start + span.shape[1] - 1 - nonempty(span).flip(1).float().argmax(dim=1)

    width = batch.user_ids.shape[1]
    owner, col = label_index // width, label_index % width
    return Packed(
        ids, position, doc, u_start[owner] + col, u_start + batch.next_pos,
        flat(batch.history_span, u_start), flat(batch.items_span, u_start), flat(batch.target_span, u_start),
        flat(batch.item_mask.bool(), i_start),
        {"history": last(batch.history_span, u_start), "items": last(batch.items_span, u_start),
         "target": last(batch.target_span, u_start), "item": last(batch.item_mask.bool(), i_start)},
        batch.item_key, batch.item_logq, batch.vocab, allowed, batch.labelled_items, b, len(batch.label_index),
        allowed_row, table)


def _pool(flat_hidden: torch.Tensor, span: tuple[torch.Tensor, torch.Tensor], last: torch.Tensor, n: int,
          how: str) -> torch.Tensor:
    """`towers.pool` over a packed span: a mean of the span's states per owner, or the last one."""
    if how == "last":
        return flat_hidden[last]
    if how != "mean":
        raise ValueError(f"pooling must be 'mean' or 'last', not {how!r}")
    pos, owner = span
    total = flat_hidden.new_zeros(n, flat_hidden.shape[-1]).index_add_(0, owner, flat_hidden[pos])
    count = torch.bincount(owner, minlength=n).to(flat_hidden.dtype)
    return total / count[:, None]


def packed_loss(model, head: nn.Module | None, p: Packed, w: LossWeights,
                share: StepShare | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`calrec_loss` on a packed step: one forward for both towers, the same losses and gradients."""
    if p.allowed_row is not None:  # the trie's masks, gathered where the table lives
        p = replace(p, allowed=p.branch_table[p.allowed_row])
    if share is None:  # L_NIG's divisor counts the labels `pack` dropped, as `calrec_loss`'s mean does
        share = StepShare(p.labelled_items if w.nig_per == "item" else p.labelled_tokens)
    hidden = decoder(model)(input_ids=p.ids, attention_mask=p.attention_mask(), position_ids=p.position,
                            use_cache=False).last_hidden_state
    flat = hidden.flatten(0, 1)

    def user() -> torch.Tensor:
        if w.user_pooling == "next":
            return flat[p.next_index]
        span = {"history": p.history, "items": p.items_span}[w.user_pooling]
        return _pool(flat, span, p.last[w.user_pooling], p.users, w.pooling)

    return weighted_losses(model, head, hidden, p.ids, p, w, share,
                           lambda: _pool(flat, p.item, p.last["item"], p.users, w.pooling),
                           lambda: _pool(flat, p.target, p.last["target"], p.users, w.pooling), user)

"""CALRec's two towers on one LLM and its three losses (docs/calrec-spec.md: Towers, Losses).

User tower: prompt + target item text (teacher forcing) -> v_U and v_T|U (pooled over the target
span). Item tower: the target item text alone -> v_T.
    L = lambda_nig * L_NIG + lambda_tt * InfoNCE(v_T|U, v_T) + lambda_ut * InfoNCE(v_U, v_T)

v_U (`user_pooling`): 'history' pools the whole history span, prefixes included (paper); 'items'
pools item-text tokens only; 'next' is the state at the last prompt token, the one that predicts
the next item. Measured at zero-shot on ML-100k, 'history' mean-pooled vectors of different users
had cosine 0.987: ~600 tokens of mostly template average the user away.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from calrec.backbone import decoder, layer_range, pad_batch
from calrec.parallel import gather_rows
from calrec.text import PromptTokens
from calrec.trie import CatalogTrie

USER_POOLING = ("history", "items", "next")


@dataclass
class Batch:
    user_ids: torch.Tensor  # (B, Lu) right-padded prompt + target tokens
    user_mask: torch.Tensor  # (B, Lu) 1 for real tokens
    history_span: torch.Tensor  # (B, Lu) bool
    items_span: torch.Tensor  # (B, Lu) bool: history item texts only (no prefixes)
    target_span: torch.Tensor  # (B, Lu) bool
    label_span: torch.Tensor  # (B, Lu) bool: tokens L_NIG predicts (the target, or every item with nig_targets=all)
    label_index: torch.Tensor  # flat (row-major) positions of label_span, found on the CPU (no device sync)
    next_pos: torch.Tensor  # (B,) the position that predicts the target's first token
    item_ids: torch.Tensor  # (B, Li) target item text alone
    item_mask: torch.Tensor
    item_key: torch.Tensor  # (B,) one id per (domain, item): equal ids are false negatives
    item_logq: torch.Tensor  # (B,) log of the item's share of training targets (logQ correction)
    vocab: torch.Tensor | None = None  # sorted token ids the LM head scores (vocab='catalog'|'trie'); None: all
    allowed: torch.Tensor | None = None  # (n_labels, len(vocab)) bool: tokens that continue a catalog item (trie)
    label_node: torch.Tensor | None = None  # (n_labels,) the trie node each label continues (trie)
    labelled_items: int = 0  # items whose tokens are labelled (the per-item normaliser of L_NIG)
    user_frozen: torch.Tensor | None = None  # (B, Lu, d) cached states below the trained layers (calrec/frozen.py)
    item_frozen: torch.Tensor | None = None  # (B, Li, d)
    top_layers: int = 0  # layers to run on the cached states

    @property
    def n_tokens(self) -> int:
        return int(self.user_mask.sum() + self.item_mask.sum())

    def to(self, device) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})




def pad_states(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Cached (tokens, d) state rows as (len(rows), width, d), right-padded with zeros (masked out)."""
    out = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    for r, x in enumerate(rows):
        out[r, : len(x)] = x
    return out


def span_mask(spans: list[tuple[int, int]], width: int) -> torch.Tensor:
    pos = torch.arange(width)[None, :]
    lo = torch.tensor([s[0] for s in spans])[:, None]
    hi = torch.tensor([s[1] for s in spans])[:, None]
    return (pos >= lo) & (pos < hi)


def spans_mask(rows: list[list[tuple[int, int]]], width: int) -> torch.Tensor:
    """Union of several [start, end) spans per row."""
    out = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, spans in enumerate(rows):
        for s, e in spans:
            out[r, s:e] = True
    return out


def collate(prompts: list[PromptTokens], items: list[list[int]], item_keys: list[int], pad: int,
            nig_targets: str = "last", item_logq: list[float] | None = None, vocab: torch.Tensor | None = None,
            trie: CatalogTrie | None = None, frozen: tuple[list[torch.Tensor], list[torch.Tensor], int] | None = None,
            masks: bool = True) -> Batch:
    """`nig_targets`: 'last' labels the target item's tokens (paper); 'all' also every history
    item's text and end token, each predicted from the items before it. With `trie`, each label
    gets its trie node and (unless `masks` is off: packed steps gather them on the device from the
    nodes) the set of tokens that continue a catalog item after the item's tokens before it. With
    `frozen` (each row's cached user and item states and the layers to run on them), the forward
    passes start above the frozen layers."""
    if nig_targets not in ("last", "all"):
        raise ValueError(f"nig_targets must be 'last' or 'all', not {nig_targets!r}")
    user_ids, user_mask = pad_batch([p.ids for p in prompts], pad)
    item_ids, item_mask = pad_batch(items, pad)
    width = user_ids.shape[1]
    if any(p.target and p.target[0] == 0 for p in prompts):
        raise ValueError("a target at position 0 has no token to predict it from")
    target = span_mask([p.target or (0, 0) for p in prompts], width)  # inference prompts have no target
    labels = target | spans_mask([p.items for p in prompts], width) if nig_targets == "all" else target
    items_span = spans_mask([[(s, e - 1) for s, e in p.items] for p in prompts], width)  # without the newline
    logq = torch.tensor(item_logq if item_logq is not None else [0.0] * len(prompts), dtype=torch.float32)
    allowed = label_node = None
    if trie is not None:  # label order is row-major: each row's labelled items in prompt order
        nodes = [n for p in prompts for i in (p.item_ids if nig_targets == "all" else p.item_ids[-1:])
                 for n in trie.paths[i]]
        label_node = torch.tensor(nodes, dtype=torch.long)
        allowed = trie.mask(nodes, vocab) if masks else None
        if len(nodes) != int(labels.sum()):
            raise ValueError("vocab='trie': labelled tokens are not item continuations (the paper template ends "
                             "history items differently from its target: use nig_targets='last' or template='compact')")
    n_items = sum(labelled_items(p, nig_targets) for p in prompts)
    cached = {}
    if frozen is not None:
        cached = dict(user_frozen=pad_states(frozen[0], width), item_frozen=pad_states(frozen[1], item_ids.shape[1]),
                      top_layers=frozen[2])
    return Batch(user_ids, user_mask, span_mask([p.history for p in prompts], width), items_span, target, labels,
                 labels.flatten().nonzero().squeeze(1), torch.tensor([p.next_pos for p in prompts]), item_ids, item_mask,
                 torch.tensor(item_keys), logq, vocab, allowed, label_node, n_items, **cached)


def hidden_states(model, ids: torch.Tensor, mask: torch.Tensor, frozen: torch.Tensor | None = None,
                  top: int = 0) -> torch.Tensor:
    """Last-layer states (after the final norm); the LM head is not run here. With `frozen` (the
    states below the top `top` layers, cached), only the top layers run."""
    if frozen is not None:
        return top_states(model, frozen, mask, top)
    return decoder(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state






def top_states(model, frozen: torch.Tensor, mask: torch.Tensor, top: int) -> torch.Tensor:
    """The top `top` layers and the final norm on cached bottom states: what `hidden_states` gives
    from the token ids (rows right-padded, positions from 0, as there)."""
    n = len(decoder(model).layers)
    with layer_range(model, n - top, n, final_norm=True) as dec:
        states = frozen.to(dec.norm.weight.dtype)
        return dec(inputs_embeds=states, attention_mask=mask, use_cache=False).last_hidden_state


def nonempty(span: torch.Tensor) -> torch.Tensor:
    """The span with an empty row replaced by its first token: a defined, history-free representation."""
    span = span.clone()
    span[:, 0] |= ~span.any(dim=1)
    return span


def pool(hidden: torch.Tensor, span: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Mean over the span's positions, or the state at its last position. An empty span (a user
    with no history) falls back to the first token."""
    span = nonempty(span)
    if how == "mean":
        m = span.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1)
    if how == "last":
        last = span.shape[1] - 1 - span.flip(1).float().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0]), last]
    raise ValueError(f"pooling must be 'mean' or 'last', not {how!r}")


def user_vector(hidden: torch.Tensor, history: torch.Tensor, items: torch.Tensor, next_pos: torch.Tensor,
                user_pooling: str, pooling: str) -> torch.Tensor:
    if user_pooling == "history":
        return pool(hidden, history, pooling)
    if user_pooling == "items":
        return pool(hidden, items, pooling)
    if user_pooling == "next":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), next_pos]
    raise ValueError(f"user_pooling must be one of {USER_POOLING}, not {user_pooling!r}")


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, keys: torch.Tensor, tau: float,
             logq: torch.Tensor | None = None, group: int = 0) -> torch.Tensor:
    """In-batch InfoNCE with cosine similarity / tau. Row i's positive is column i; other columns
    holding the same item (same key) are false negatives and are masked out. With `logq` (log of
    each column item's sampling share), logits are corrected by -logq: in-batch negatives are
    drawn by popularity, which otherwise teaches the towers to push popular items down. With
    `group`, rows contrast only within consecutive groups of that many rows (a fixed number of
    negatives however large the forward batch)."""
    logits = F.normalize(anchor.float(), dim=-1) @ F.normalize(positive.float(), dim=-1).T / tau
    if logq is not None:
        logits = logits - logq[None, :]
    same = keys[:, None] == keys[None, :]
    same.fill_diagonal_(False)
    if group and group < len(keys):
        g = torch.arange(len(keys), device=keys.device) // group
        same |= g[:, None] != g[None, :]
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(keys), device=logits.device))


def token_logprobs(model, hidden: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor,
                   vocab: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probability of each labelled token (in row-major order of `labels`). Logits are computed
    only at the positions that predict them (the 49k-word head is ~20% of SmolLM2's compute), and
    with `vocab` (sorted token ids) only over those tokens: a softmax over the catalog's own
    vocabulary (~3k tokens on ML-100k), which every item text is spelled in; with `allowed`, each
    label's softmax is over the tokens that continue a catalog item (calrec/trie.py).

    `labels`: a bool mask, or its flat positions (`Batch.label_index`): a mask's positions are
    found on the device, which stops the host until the GPU gets there; collate finds them on the CPU.
    A label never sits in column 0 (a prompt comes first), so position - 1 is in the same row."""
    at = labels.flatten().nonzero().squeeze(1) if labels.dtype == torch.bool else labels
    h, target = hidden.flatten(0, 1)[at - 1], ids.flatten()[at]
    if vocab is None:
        logits = model.get_output_embeddings()(h).float()
    else:
        logits = F.linear(h, model.get_output_embeddings().weight[vocab]).float()
        target = torch.searchsorted(vocab, target)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
    return -F.cross_entropy(logits, target, reduction="none")


def nig_loss(model, hidden: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor,
             vocab: torch.Tensor | None = None, allowed: torch.Tensor | None = None, n_labels: int | None = None) -> torch.Tensor:
    """Next-item generation: LM cross-entropy on the labelled tokens only, averaged over `n_labels`
    (default: this batch's labelled tokens; a micro-batch passes its whole step's)."""
    lp = token_logprobs(model, hidden, ids, labels, vocab, allowed)
    return -lp.mean() if n_labels is None else -lp.sum() / n_labels


def labelled_tokens(prompt: PromptTokens, nig_targets: str) -> int:
    """How many tokens `collate` labels for L_NIG in this prompt (the step's normaliser)."""
    s, e = prompt.target or (0, 0)
    return e - s + (sum(b - a for a, b in prompt.items) if nig_targets == "all" else 0)


def labelled_items(prompt: PromptTokens, nig_targets: str) -> int:
    """How many items' tokens `collate` labels in this prompt (the per-item normaliser)."""
    return (1 if prompt.target else 0) + (len(prompt.items) if nig_targets == "all" else 0)


def nig_normaliser(prompt: PromptTokens, nig_targets: str, per: str) -> int:
    """L_NIG's divisor for this prompt: its labelled tokens (a mean over tokens) or items (a sum
    of each item's token losses, a mean over items: under the trie, -log p(item) per item)."""
    return labelled_items(prompt, nig_targets) if per == "item" else labelled_tokens(prompt, nig_targets)


@dataclass
class StepShare:
    """This forward pass's part of one optimiser step: every loss is a mean over the whole step
    (all micro-batches, all ranks), so the gradients of the parts add up to the step's gradient.
    `labels`: L_NIG's divisor for the step (labelled tokens, or items with nig_per='item'); `fraction`: this forward's rows (all ranks) / the step's
    rows; `world`: ranks; `group`: contrastive rows per group (0: the forward's rows, all ranks)."""
    labels: int
    fraction: float = 1.0
    world: int = 1
    group: int = 0


@dataclass
class LossWeights:
    nig: float = 1.0
    tt: float = 0.5
    ut: float = 0.5
    tau: float = 0.05
    pooling: str = "mean"
    user_pooling: str = "history"
    logq: bool = False
    nig_per: str = "token"  # L_NIG averaged over labelled 'token's or over labelled 'item's


def user_tower(hidden: torch.Tensor, batch: Batch, w: LossWeights) -> torch.Tensor:
    return user_vector(hidden, batch.history_span, batch.items_span, batch.next_pos, w.user_pooling, w.pooling)


def calrec_loss(model, head: nn.Module | None, batch: Batch, w: LossWeights,
                share: StepShare | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted loss and its parts, as detached tensors (no host sync here: the caller decides
    when to read them). With `share` (micro-batches, several ranks) each is this forward's
    contribution to the step's loss on this rank: summed over forwards and ranks, the step's loss.

    Across ranks the contrastive rows are gathered, so every rank computes the same InfoNCE over
    the global rows; each takes 1/world of it, and the gather sends every rank's gradient back."""
    hidden = hidden_states(model, batch.user_ids, batch.user_mask, batch.user_frozen, batch.top_layers)

    def item_vectors() -> torch.Tensor:  # the item tower: its own forward pass over the item texts
        items = hidden_states(model, batch.item_ids, batch.item_mask, batch.item_frozen, batch.top_layers)
        return pool(items, batch.item_mask.bool(), w.pooling)

    return weighted_losses(model, head, hidden, batch.user_ids, batch, w, share, item_vectors,
                           lambda: pool(hidden, batch.target_span, w.pooling), lambda: user_tower(hidden, batch, w))


def weighted_losses(model, head: nn.Module | None, hidden: torch.Tensor, ids: torch.Tensor, b, w: LossWeights,
                    share: StepShare | None, item_vectors, target_vectors, user_vectors) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The losses from the user tower's states `hidden` over the token ids `ids` (padded rows, or packed
    ones: calrec/packed.py) and three callables that pool v_T (the item tower), v_T|U and v_U from
    them. `b` holds the labels and item keys (`label_index`, `vocab`, `allowed`, `labelled_items`,
    `item_key`, `item_logq`)."""
    total = hidden.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if w.nig:
        per_item = b.labelled_items if w.nig_per == "item" else None
        l_nig = nig_loss(model, hidden, ids, b.label_index, b.vocab, b.allowed, share.labels if share else per_item)
        total = total + w.nig * l_nig
        parts["nig"] = l_nig.detach()
    if w.tt or w.ut:
        share = share or StepShare(0)
        proj = head if head is not None else nn.Identity()
        keys = gather_rows(b.item_key)
        logq = gather_rows(b.item_logq) if w.logq else None
        v_t = gather_rows(proj(item_vectors()))
        scale = share.fraction / share.world
        for name, weight, anchor in (("tt", w.tt, target_vectors), ("ut", w.ut, user_vectors)):
            if weight:
                loss = info_nce(gather_rows(proj(anchor())), v_t, keys, w.tau, logq, share.group) * scale
                total = total + weight * loss
                parts[name] = loss.detach()
    parts["total"] = total.detach()
    return total, parts

"""A prefix tree over a catalog's item continuations (item text + end token), for constrained
generation (as in GENRE, De Cao et al. 2021): at each step only tokens that continue some catalog
item are allowed. Normalising the LM's softmax over those tokens turns it into a distribution over
the catalog's items, p(item | prompt) = prod_t p(token_t | prompt, prefix, allowed), so

- its per-item NLL is an item-level cross-entropy, comparable with popularity's;
- training (vocab='trie') spends no capacity on spelling: once a prefix is unique, the remaining
  tokens have probability 1 and cost nothing;
- every sample is a catalog item's text, so BM25 maps it back exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class BranchMasks:
    """The allowed tokens at the trie's branching nodes (two children or more) as one table, so a
    step's masks are gathered where the table lives (on the accelerator) from one row index per
    label, instead of being built on the host and copied. A label at a node with one child needs
    no logits at all: its token is certain, log-probability exactly 0, gradient exactly 0. A trie
    of n items has fewer than n branching nodes, so the table is at most (items, V)."""

    row: torch.Tensor  # (nodes,) long, on the CPU: each node's row in `allowed`, -1 where it has one child
    allowed: torch.Tensor  # (branching nodes, V) bool

    def to(self, device) -> "BranchMasks":
        return replace(self, allowed=self.allowed.to(device))


class CatalogTrie:
    def __init__(self, continuations: list[list[int]]):
        self.child: list[dict[int, int]] = [{}]  # node -> {token: child node}; node 0 is the root
        self.paths: list[list[int]] = []  # per item: the node before each of its tokens
        for cont in continuations:
            node, path = 0, []
            for t in cont:
                path.append(node)
                nxt = self.child[node].get(t)
                if nxt is None:
                    nxt = len(self.child)
                    self.child[node][t] = nxt
                    self.child.append({})
                node = nxt
            self.paths.append(path)
        self._allowed: dict[int, torch.Tensor] = {}

    def allowed(self, node: int) -> torch.Tensor:
        if node not in self._allowed:
            self._allowed[node] = torch.tensor(sorted(self.child[node]), dtype=torch.long)
        return self._allowed[node]

    def mask(self, nodes: list[int], vocab: torch.Tensor | None = None, size: int | None = None) -> torch.Tensor:
        """(len(nodes), V) bool: the tokens allowed after each node. Columns are positions in the
        sorted `vocab` (a restricted softmax), or token ids up to `size`."""
        cols = [self.allowed(n) for n in nodes]
        counts = torch.tensor([len(c) for c in cols])
        col = torch.cat(cols) if cols else torch.empty(0, dtype=torch.long)
        if vocab is not None:
            col = torch.searchsorted(vocab, col)
        out = torch.zeros(len(nodes), len(vocab) if vocab is not None else size, dtype=torch.bool)
        out[torch.repeat_interleave(torch.arange(len(nodes)), counts), col] = True
        return out

    def branch_masks(self, vocab: torch.Tensor | None = None, size: int | None = None) -> BranchMasks:
        """`mask` of every branching node, rows indexed by `BranchMasks.row` (columns as in `mask`)."""
        branching = [n for n, c in enumerate(self.child) if len(c) > 1]
        row = torch.full((len(self.child),), -1, dtype=torch.long)
        row[branching] = torch.arange(len(branching))
        return BranchMasks(row, self.mask(branching, vocab, size))

    def step(self, nodes: list[int], tokens: list[int]) -> list[int]:
        """Each node's child along its token (a token the trie does not allow leaves the trie: -1)."""
        return [self.child[n].get(t, -1) if n >= 0 else -1 for n, t in zip(nodes, tokens)]

    def step_path(self, tokens: list[int]) -> list[int]:
        """The nodes reached after each token but the last of `tokens` from the root (-1 once off the trie)."""
        out, node = [], 0
        for t in tokens[:-1]:
            node = self.child[node].get(t, -1) if node >= 0 else -1
            out.append(node)
        return out

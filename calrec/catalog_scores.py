"""Exact log p(item | prompt) for EVERY catalog item in one forward pass per user batch, under the
item trie (vocab='trie').

Under the trie each token's softmax is over the tokens that continue some catalog item after the
item's tokens before it (calrec/trie.py). Where a node has one child, that token has probability 1:
an item's probability is fixed by the nodes where the trie branches. So only the states AT the
branching nodes are needed, and only the tokens on the paths to them need a forward pass: on
ML-100k's compact "Title (Year)" texts, 489 tokens for 1,682 items (the texts hold 20,000).

Those tokens are fed once per user after the prompt, as a tree: each attends to the prompt and to
its ancestors only, at the position it would have in its own item's continuation (tree attention,
as in speculative decoding's token trees). Each branching node's children are scored against the
LM head rows of their tokens, log-softmaxed within the node, and an item's score is the sum over
the branching edges on its path.
"""
from __future__ import annotations

import numpy as np
import torch

from calrec.backbone import decoder, pad_batch
from calrec.trie import CatalogTrie


class TrieScorer:
    """The trie's branching structure, precomputed once per catalog."""

    def __init__(self, trie: CatalogTrie, continuations: list[list[int]]):
        parent, token = {0: -1}, {0: -1}
        for node, children in enumerate(trie.child):
            for tok, child in children.items():
                parent[child], token[child] = node, tok
        branching = [n for n, c in enumerate(trie.child) if len(c) >= 2]
        fed: set[int] = set()  # nodes whose token must be fed: ancestors-or-self of a non-root branching node
        for b in branching:
            while b != 0 and b not in fed:
                fed.add(b)
                b = parent[b]
        order = sorted(fed, key=lambda n: (self._depth(n, parent), n))  # parents before children
        self.fed_index = {n: i for i, n in enumerate(order)}
        self.fed_tokens = torch.tensor([token[n] for n in order], dtype=torch.long)
        self.fed_depth = torch.tensor([self._depth(n, parent) for n in order], dtype=torch.long)  # 1 = first item token
        f = len(order)
        anc = torch.zeros(f, f, dtype=torch.bool)  # anc[i, j]: fed node j is node i or an ancestor of it
        for i, n in enumerate(order):
            x = n
            while x != 0:
                anc[i, self.fed_index[x]] = True
                x = parent[x]
        self.ancestors = anc
        # Edges out of branching nodes: where the state to read sits (-1: the prompt's last token), its token.
        edges, self.edge_state, self.edge_token = {}, [], []
        groups = []
        for b in branching:
            group = []
            for tok, child in sorted(trie.child[b].items()):
                edges[(b, tok)] = len(self.edge_token)
                group.append(len(self.edge_token))
                self.edge_state.append(-1 if b == 0 else self.fed_index[b])
                self.edge_token.append(tok)
            groups.append(group)
        width = max((len(g) for g in groups), default=1)
        self.groups = torch.full((len(groups), width), -1, dtype=torch.long)  # edge indices per branching node
        for g, group in enumerate(groups):
            self.groups[g, : len(group)] = torch.tensor(group)
        self.edge_state = torch.tensor(self.edge_state, dtype=torch.long)
        self.edge_token = torch.tensor(self.edge_token, dtype=torch.long)
        # item_edges[i, e] = 1 where edge e is on item i's path: score = item_edges @ edge log-probs.
        self.item_edges = torch.zeros(len(continuations), len(self.edge_token))
        for i, (cont, path) in enumerate(zip(continuations, trie.paths)):
            for node, tok in zip(path, cont):
                if (node, tok) in edges:
                    self.item_edges[i, edges[(node, tok)]] = 1.0

    @staticmethod
    def _depth(n: int, parent: dict[int, int]) -> int:
        d = 0
        while n != 0:
            n, d = parent[n], d + 1
        return d

    @property
    def n_fed(self) -> int:
        return len(self.fed_tokens)

    @torch.no_grad()
    def scores(self, model, prompts: list[list[int]], pad_id: int) -> torch.Tensor:
        """(users, items) log p(item text + end | prompt) under the trie, every item at once."""
        device = next(model.parameters()).device
        ids, mask = pad_batch(prompts, pad_id, left=True)  # every prompt ends at column P - 1
        users, p = ids.shape
        f = self.n_fed
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        tree_pos = pos[:, -1:] + self.fed_depth[None, :]
        seq = torch.cat([ids, self.fed_tokens.expand(users, f)], dim=1).to(device)
        positions = torch.cat([pos, tree_pos], dim=1).to(device)
        attend = torch.zeros(users, p + f, p + f, dtype=torch.bool)
        real = mask.bool()
        attend[:, :p, :p] = torch.ones(p, p, dtype=torch.bool).tril()[None] & real[:, None, :]
        attend[:, p:, :p] = real[:, None, :]
        attend[:, p:, p:] = self.ancestors[None]
        attend[:, torch.arange(p + f), torch.arange(p + f)] = True  # a padding row attends to itself (no NaN)
        hidden = decoder(model)(input_ids=seq, attention_mask=attend[:, None].to(device), position_ids=positions,
                                use_cache=False).last_hidden_state
        state_at = torch.where(self.edge_state < 0, p - 1, p + self.edge_state).to(device)
        h = hidden[:, state_at]  # (users, edges, d)
        w = model.get_output_embeddings().weight[self.edge_token.to(device)]  # (edges, d)
        logits = (h.float() * w.float()[None]).sum(-1)  # (users, edges)
        groups = self.groups.to(device)
        padded = logits[:, groups.clamp(min=0)].masked_fill(groups[None] < 0, float("-inf"))
        logp = torch.log_softmax(padded, dim=-1)
        edge_logp = torch.zeros_like(logits)
        edge_logp[:, groups[groups >= 0]] = logp[:, groups >= 0]
        return edge_logp @ self.item_edges.to(device).T


def catalog_logprobs(scorer: TrieScorer, model, prompts: list[list[int]], pad_id: int, user_batch: int) -> np.ndarray:
    """(len(prompts), items) log-likelihoods, `user_batch` prompts per forward pass."""
    out = [scorer.scores(model, prompts[s : s + user_batch], pad_id).float().cpu().numpy()
           for s in range(0, len(prompts), user_batch)]
    return np.concatenate(out) if out else np.zeros((0, scorer.item_edges.shape[0]), dtype=np.float32)

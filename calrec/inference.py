"""CALRec's inference: the ranked lists or scores behind `predict` (docs/calrec-spec.md: Inference), as a
mixin of `calrec.recommender.CALRec`, whose fitted state (model, builder, trie, catalog,
popularity, split) it reads.

  qrr / top1 / greedy  sampled item texts -> catalog items by quasi-round-robin BM25, then a fill
  dense                the user tower's vector against every item tower vector
  fused                reciprocal rank fusion of the QRR list and the dense scores
  likelihood           log p(item | prompt): under the trie the whole catalog in one tree forward
                       per user batch (calrec/catalog_scores.py), else over a candidate pool
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from calrec.catalog_scores import TrieScorer, catalog_logprobs
from calrec.generate import continuation_logprobs, sample
from calrec.retrieve import fill_list, group_generations, quasi_round_robin, reciprocal_rank_fusion, top_items
from calrec.backbone import pad_batch
from calrec.towers import collate, hidden_states, pool, user_tower


class Inference:
    def _infer(self):
        """The model for inference: a bf16 copy where bf16 is native (faster generation), else the
        model itself. Reset after every weight change."""
        if self._inference_model is None:
            self._inference_model = copy.deepcopy(self.model).to(torch.bfloat16).eval() if self.bf16 else self.model.eval()
            self._item_vectors = None
        return self._inference_model

    def _prompts(self, histories: list[np.ndarray]) -> list:
        if self.cfg.text.shuffle_history:
            rng = np.random.default_rng(0)
            histories = [rng.permutation(h) for h in histories]
        return [self.builder.user_prompt(np.asarray(h)) for h in histories]

    def _generated_lists(self, histories: list[np.ndarray], fill: str, length: int) -> list[list[int]]:
        """Sampled item texts -> catalog items by QRR, then `fill` up to `length` items."""
        i = self.cfg.inference
        model = self._infer()
        prompts = self._prompts(histories)
        n, temp = (1, 0.0) if self.inference == "greedy" else (i.n_samples, i.temperature)
        depth = None if fill == "bm25" else 1  # paper: deeper BM25 ranks; else each generation's own best match
        dense = self._dense_scores(histories) if fill == "dense" else None
        out = []
        for start in range(0, len(prompts), self.user_batch):
            chunk = prompts[start : start + self.user_batch]
            samples = sample(model, [p.ids for p in chunk], n, temp, i.max_new_tokens, self.builder.stop,
                             self.tok.pad_token_id, self.gen, self.vocab, self.trie)
            for k, user_samples in enumerate(samples):
                texts = [self.tok.decode(s.tokens, skip_special_tokens=True) for s in user_samples]
                groups = group_generations(texts, [s.logprob for s in user_samples])
                exclude = self._exclude(histories[start + k])
                lst = quasi_round_robin(groups, self.catalog, length, exclude, depth)
                if fill in ("popularity", "dense"):
                    lst = fill_list(lst, self.popularity if fill == "popularity" else dense[start + k], length, exclude)
                out.append(lst)
        return out

    @torch.no_grad()
    def _dense_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        model = self._infer()
        w = self._loss_weights()
        if self._item_vectors is None:
            vecs = []
            items = [self.builder.item_ids(i) for i in range(self.split.n_items)]
            for s in range(0, len(items), 64):
                ids, mask = (t.to(self.device) for t in pad_batch(items[s : s + 64], self.tok.pad_token_id))
                v = pool(hidden_states(model, ids, mask), mask.bool(), w.pooling).float()
                vecs.append(self.head(v) if self.head is not None else v)
            self._item_vectors = torch.nn.functional.normalize(torch.cat(vecs), dim=-1)
        prompts = self._prompts(histories)
        b = collate(prompts, [[0]] * len(prompts), list(range(len(prompts))), self.tok.pad_token_id).to(self.device)
        v = user_tower(hidden_states(model, b.user_ids, b.user_mask), b, w).float()
        users = torch.nn.functional.normalize(self.head(v) if self.head is not None else v, dim=-1)
        return (users @ self._item_vectors.T).cpu().numpy()

    def _exclude(self, history: np.ndarray) -> set[int]:
        """Items a ranked list leaves out: the user's history where the suite masks it, else none
        (a repeat target must stay rankable)."""
        return set(history.tolist()) if self.mask_history else set()

    def _pool_spec(self) -> dict | str:
        """'all' items, or {source: M} for a pool. auto: the whole catalog where it is cheap (under
        the trie, one tree forward per user; or on a GPU), else a pool of QRR, dense and popularity's top 50."""
        spec = self.cfg.inference.candidates
        if spec == "auto":
            cheap = self.trie is not None or self.device.startswith("cuda")
            spec = "all" if cheap else {"qrr": 50, "dense": 50, "popularity": 50}
        return spec

    def _candidates(self, histories: list[np.ndarray]) -> list[list[int]]:
        """Items whose likelihood is computed: the whole catalog, or the union of the QRR list,
        the dense towers' and popularity's top M (a labelled CPU option without the trie)."""
        pool_spec = self._pool_spec()
        if pool_spec == "all":
            return [[i for i in range(self.split.n_items) if i not in self._exclude(h)] for h in histories]
        parts = []
        if "qrr" in pool_spec:
            parts.append(self._generated_lists(histories, "bm25", pool_spec["qrr"]))
        if "dense" in pool_spec:
            dense = self._dense_scores(histories)
            parts.append([top_items(d, pool_spec["dense"], self._exclude(h)) for d, h in zip(dense, histories)])
        if "popularity" in pool_spec:
            parts.append([top_items(self.popularity, pool_spec["popularity"], self._exclude(h)) for h in histories])
        return [sorted(set().union(*(p[u] for p in parts))) for u in range(len(histories))]

    def _catalog_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        """log p(item | prompt) for every item under the trie (calrec/catalog_scores.py): a score
        matrix, so the evaluator masks history as the suite says."""
        if self._trie_scorer is None:
            self._trie_scorer = TrieScorer(self.trie, [self.builder.continuation(i) for i in range(self.split.n_items)])
        prompts = [p.ids for p in self._prompts(histories)]
        return catalog_logprobs(self._trie_scorer, self._infer(), prompts, self.tok.pad_token_id, self.user_batch)

    def _likelihood_lists(self, histories: list[np.ndarray], chunk: int = 128) -> list[list[int]] | np.ndarray:
        """Candidates ranked by log p(item text + end token | prompt) under the finetuned model."""
        if self.trie is not None and self._pool_spec() == "all":
            return self._catalog_scores(histories)
        model = self._infer()
        prompts = [p.ids for p in self._prompts(histories)]
        cands = self._candidates(histories)
        out = []
        for start in range(0, len(prompts), self.user_batch):
            users = range(start, min(start + self.user_batch, len(prompts)))
            scores = {u: [] for u in users}
            for c in range(0, max(len(cands[u]) for u in users), chunk):
                live = [u for u in users if c < len(cands[u])]
                conts = [[self.builder.continuation(i) for i in cands[u][c : c + chunk]] for u in live]
                for u, lp in zip(live, continuation_logprobs(model, [prompts[u] for u in live], conts, self.tok.pad_token_id,
                                                                   self.vocab, self.trie)):
                    scores[u].append(lp)
            for u in users:
                lp = np.concatenate(scores[u])
                out.append([cands[u][k] for k in np.argsort(-lp, kind="stable")])
        return out

    def _predict(self, histories: list[np.ndarray]):
        i = self.cfg.inference
        if self.inference == "dense":
            return self._dense_scores(histories)
        if self.inference == "likelihood":
            return self._likelihood_lists(histories)
        if self.inference == "top1":
            return self._generated_lists(histories, "none", i.list_length)
        lists = self._generated_lists(histories, i.fill, i.list_length)
        if self.inference == "fused":
            dense = self._dense_scores(histories)
            return np.stack([reciprocal_rank_fusion([lst], d, self.split.n_items) for lst, d in zip(lists, dense)])
        return lists

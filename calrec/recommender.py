"""CALRec behind the harness's fit/predict contract. Every spec choice is a parameter
(`calrec/config.py`, grouped by stage), so the ablation rows of docs/calrec-spec.md are suite variants of
this one class:

  stages     zero-shot: stage1=None, stage2_steps=0;  I only: stage2_steps=0;  II only: stage1=None
  losses     lambda_nig / lambda_tt / lambda_ut, nig_targets (contrastive-only: lambda_nig=0, inference=dense)
  inference  'qrr' | 'top1' | 'greedy' | 'dense' | 'fused' | 'likelihood', and `fill` after the generations' matches
  controls   shuffle_history=True

Each stage's weights are cached by the configuration that produced them: stage-II variants share
one stage-I run, and the inference variants share one trained model (selection does not depend on
`inference`: it runs QRR, dense retrieval without L_NIG, or no inference at all with select='nll').
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from bench.datasets import entry_spec, load_dataset
from bench.execute.distributed import agree, barrier, gather_objects, is_main, world
from bench.models import FitContext
from bench.precision import autocast, resolve_bf16, resolve_device
from bench.execute.scoring import validation_metrics, validation_ndcg10
from bench.split import Split, leave_one_out
from bench.text import BM25Catalog
from calrec.backbone import add_lora, freeze_below, load_backbone, residual_dropout
from calrec.cache import read_cache, read_stage, stage_path, validation_path, write_cache, write_stage
from calrec.frozen import Ragged, cache_key, cached_states, frozen_states
from calrec.inference import Inference
from calrec.config import CALRecConfig, stage1_settings
from calrec.text import PromptBuilder, domain_noun
from calrec.towers import LossWeights, collate, hidden_states, pad_states, token_logprobs
from calrec.train import (Domain, StageConfig, domain_probabilities, epoch_positions, load_trainable_state, tiling_shifts,
                          train_stage, trainable_state)


class CALRec(Inference):
    data_parallel = True  # trains across the ranks of a torchrun launch (calrec/parallel.py)

    def __init__(self, **params):
        self.p = params
        self.cfg = CALRecConfig.from_params(params)
        t = self.cfg.training
        # The stored config keeps "auto"; info() records what it resolved to on this machine.
        self.device = resolve_device(t.device)
        self.bf16 = resolve_bf16(t.bf16, self.device)
        self.fused_adamw = self.device.startswith("cuda") if t.fused_adamw == "auto" else bool(t.fused_adamw)
        # Users decoded together; on 2 CPU cores 16 beat 8 and 32 (bench.perf.calrec, 330-token prompts).
        self.user_batch = self.cfg.inference.user_batch or (64 if self.device.startswith("cuda") else 16)
        self.inference = self.cfg.inference.inference
        self.timings: dict = {}
        self.measured: dict = {}
        self._inference_model = None
        self._item_vectors = None
        self._trie_scorer = None
        self._frozen: dict = {}  # domain name -> its FrozenStates, one a window tiling
        self._valid_frozen: Ragged | None = None  # the validation prompts' frozen-layer output (frozen_cache)

    # ----------------------------------------------------------------- fitting
    def setup(self, split: Split, seed: int, history_masking: bool = True, cache: Path | None = None) -> None:
        """The untrained model for `split`: backbone (with LoRA or frozen layers), prompts, trie,
        BM25 catalog and popularity. `fit` starts here; benchmarks use it alone. `cache`: a folder
        for the bundled backbone's dequantised weights."""
        t = self.cfg.training
        torch.set_num_threads(t.threads or os.cpu_count() or 1)
        torch.manual_seed(seed)
        self.seed, self.split = seed, split
        self.mask_history = history_masking
        self.shared_cache = cache
        self.model, self.tok = load_backbone(t.backbone, [" ".join(a.values()) for a in split.item_text], seed=seed,
                                             cache=cache)
        if t.lora_r:  # on the top train_layers layers (0: all)
            self.model = add_lora(self.model, t.lora_r, t.lora_alpha, top_layers=t.train_layers)
        elif t.train_layers:
            freeze_below(self.model, t.train_layers)
        if t.dropout:
            residual_dropout(self.model, t.dropout, t.train_layers)
        self.model.to(self.device)
        hidden = self.model.config.hidden_size
        self.head = torch.nn.Linear(hidden, hidden).to(self.device) if self.cfg.towers.head else None
        self.builder = self._builder(split)
        self.vocab = self.builder.vocab if self.cfg.towers.vocab in ("catalog", "trie") else None
        self.trie = self.builder.trie if self.cfg.towers.vocab == "trie" else None
        self.catalog = BM25Catalog(split.item_text)
        self.popularity = np.bincount(np.concatenate(split.train), minlength=split.n_items).astype(np.float64)
        self.gen = torch.Generator().manual_seed(seed)

    def fit(self, split: Split, ctx: FitContext) -> None:
        t = self.cfg.training
        self.setup(split, ctx.seed, bool(ctx.extra.get("history_masking", True)), ctx.extra.get("shared_cache"))
        self.valid_sample = ctx.valid_users[: t.valid_users]
        self._valid_frozen = None
        key = self._training_key(ctx.seed)
        if ctx.extra.get("code_fingerprint"):  # the cell records today's code: its weights must come from it
            key["code"] = ctx.extra["code_fingerprint"]
        if t.stage1:
            s1 = stage1_settings(t.stage1, split.dataset)
            domains = self._stage1_domains(split, s1)
            # The domains' data versions (content hashes) key the weights too: other files, other weights.
            key["stage1"] = {**s1, "data": [d.split.version for d in domains]}
            rng = np.random.default_rng([ctx.seed, 1])  # one stream per stage: a cached stage I changes nothing after it
            self._cached_stage("stage1", key, ctx, lambda: self._stage1(domains, s1, ctx, rng))
        if t.stage2_steps:
            key["stage2"] = {"dataset": split.dataset, "steps": t.stage2_steps, "eval_every": t.eval_every,
                             "patience": t.patience, "select": self._selection(), "valid": self._valid_digest()}
            target = Domain(split.dataset, split, self.builder, 0)
            rng = np.random.default_rng([ctx.seed, 2])
            # What _selection() chose: without L_NIG there is no NLL, and dense NDCG@10 selects.
            select = "valid_nll" if "select" in self._selection() else "valid_NDCG@10"
            cfg2 = self._stage_config(t.stage2_steps)
            self._cached_stage("stage2", key, ctx, lambda: train_stage(
                self.model, self.head, [self._with_frozen(target, cfg2, ctx)], np.ones(1), cfg2, self._loss_weights(),
                rng, self.tok.pad_token_id, self._validate, ctx.curves, "stage2", select))
        self.model.eval()
        self._inference_model = None
        self.measured = self._final_validation(ctx, key)
        self.gen = torch.Generator().manual_seed(self.seed)  # test sampling starts from the seed

    def _builder(self, split: Split) -> PromptBuilder:
        x = self.cfg.text
        return PromptBuilder(self.tok, split.item_text, domain_noun(split.dataset), x.max_history, x.max_item_tokens,
                             x.max_prompt_tokens, x.template, x.item_fields, x.natural_titles)

    def _loss_weights(self) -> LossWeights:
        w = self.cfg.towers
        return LossWeights(w.lambda_nig, w.lambda_tt, w.lambda_ut, w.tau, w.pooling, w.user_pooling, w.logq, w.nig_per)

    def _stage_config(self, steps: int, eval_every: int | None = None) -> StageConfig:
        t = self.cfg.training
        return StageConfig(steps=steps, batch_size=t.batch_size, lr=t.lr, warmup=t.warmup, schedule=t.schedule,
                           weight_decay=t.weight_decay,
                           eval_every=t.eval_every if eval_every is None else eval_every, patience=t.patience,
                           target=t.target, examples=t.examples, nig_targets=self.cfg.towers.nig_targets,
                           nig_per=self.cfg.towers.nig_per,
                           vocab=self.cfg.towers.vocab, micro_batch=t.micro_batch, contrastive_batch=t.contrastive_batch,
                           log_every=t.log_every, fused=self.fused_adamw, pack=t.pack, compile=t.compile,
                           shuffle_history=self.cfg.text.shuffle_history, window_tilings=t.window_tilings,
                           bf16=self.bf16, device=self.device)

    def _training_key(self, seed: int) -> dict:
        """Everything that shapes the trained weights (and nothing that only shapes inference)."""
        t = {k: v for k, v in asdict(self.cfg.training).items()
             if k not in ("stage1", "stage2_steps", "eval_every", "patience", "select", "valid_users", "threads", "device",
                          "log_every", "fused_adamw")}
        key = {**asdict(self.cfg.text), **asdict(self.cfg.towers), **t, "bf16": self.bf16, "seed": seed}
        if self.fused_adamw:
            key["fused_adamw"] = True
        # Switches absent while off, so weights trained before they existed keep their key.
        off = {"micro_batch": 0, "contrastive_batch": 0, "nig_per": "token", "frozen_cache": False,
               "natural_titles": False, "weight_decay": 0.0, "dropout": 0.0, "pack": 0, "compile": False,
               "window_tilings": 1}
        return {k: v for k, v in key.items() if v is not None and not (k in off and v == off[k])}

    def _selection(self) -> dict:
        """How checkpoints are chosen: validation NLL, QRR through generation, or dense retrieval without L_NIG."""
        if self.cfg.training.select == "nll" and self.cfg.towers.lambda_nig:
            return {"select": "nll"}
        if not self.cfg.towers.lambda_nig:
            return {"inference": "dense"}
        i = self.cfg.inference
        return {"inference": "qrr", "n_samples": i.n_samples, "temperature": i.temperature,
                "max_new_tokens": i.max_new_tokens, "list_length": i.list_length}

    def _valid_digest(self) -> str:
        return hashlib.sha1(np.asarray(self.valid_sample, dtype=np.int64).tobytes()).hexdigest()[:16]

    def _cached_stage(self, stage: str, key: dict, ctx: FitContext, train) -> None:
        """Load the stage's weights (and its training curve) if this exact configuration ran before;
        else train and save them atomically."""
        path = stage_path(ctx.extra.get("shared_cache", ctx.workdir), stage, key)
        saved = read_stage(path, key, self.device)
        if saved is not None:
            load_trainable_state(self.model, self.head, saved["state"])
            ctx.curves.extend(saved.get("curves", []))
            self.timings[stage] = {**saved["timing"], "cached": str(path)}
            return
        first = len(ctx.curves)
        timing = train()
        if is_main():
            write_stage(path, {"state": trainable_state(self.model, self.head), "timing": timing, "key": key,
                               "curves": ctx.curves[first:]})
        barrier()
        self.timings[stage] = timing

    def _final_validation(self, ctx: FitContext, key: dict) -> dict:
        """Validation numbers of the chosen weights (never test), computed once per trained model:
        the inference variants that share the weights share them."""
        path = validation_path(ctx.extra.get("shared_cache", ctx.workdir), key, self._valid_digest())
        saved = read_cache(path, json.loads, valid=_validation_numbers)
        if saved is not None:
            return saved
        out = agree(self._validate(final=True))
        if is_main():
            write_cache(path, json.dumps(out).encode())
        barrier()
        return out

    def _stage1_domains(self, split: Split, s1: dict) -> list[Domain]:
        """Every dataset stage I names (a spec string, or {spec: ..., loader params...}), the target among them."""
        domains, offset = [], 0
        for entry in s1["datasets"]:
            spec, params = entry_spec(entry)
            dsplit = split if spec == split.dataset else leave_one_out(load_dataset(spec, **params))
            domains.append(Domain(spec, dsplit, self._builder(dsplit), offset))
            offset += dsplit.n_items
        return domains

    def _stage1(self, domains: list[Domain], s1: dict, ctx: FitContext, rng) -> dict:
        """The multi-domain stage over every named dataset's training sequences."""
        probs = domain_probabilities(domains, s1["exponent"])
        cfg = self._stage_config(s1["steps"], 0)
        # No model selection in stage I: the target's validation users belong to stage II.
        timing = train_stage(self.model, self.head, [self._with_frozen(d, cfg, ctx) for d in domains], probs, cfg,
                             self._loss_weights(), rng, self.tok.pad_token_id, None, ctx.curves, "stage1")
        timing["domain_probabilities"] = {d.name: p for d, p in zip(domains, probs.round(4).tolist())}
        timing["domain_data"] = {d.name: d.split.version for d in domains}  # the cell's other inputs, with their hashes
        return timing

    def _with_frozen(self, domain: Domain, cfg: StageConfig, ctx: FitContext) -> Domain:
        """The domain with its frozen layers' output for every epoch window (frozen_cache), computed
        once per fit (stage I and II share the target's) and kept in the shared cache across cells."""
        t = self.cfg.training
        if not t.frozen_cache:
            return domain
        if domain.name not in self._frozen:
            shuffle = np.random.default_rng([self.seed, 3]) if self.cfg.text.shuffle_history else None
            folder = ctx.extra.get("shared_cache", ctx.workdir) / "calrec-frozen"
            t0, window, states = time.perf_counter(), domain.builder.max_history + 1, []
            for shift in tiling_shifts(cfg, window):  # one cache a tiling, each keyed by its windows
                positions = epoch_positions(domain.split.train, cfg, window, shift)
                key = cache_key(domain.builder, positions, domain.split.version, t.train_layers, self.bf16, t.backbone,
                                self.seed if shuffle is not None else None)
                states.append(frozen_states(self.model, domain.builder, domain.split.train, positions, t.train_layers,
                                            self.tok.pad_token_id, self.bf16, self.device, key, folder, shuffle))
            self._frozen[domain.name] = tuple(states)
            self.timings.setdefault("frozen_cache_seconds", {})[domain.name] = round(time.perf_counter() - t0, 1)
        return replace(domain, frozen=self._frozen[domain.name])

    # -------------------------------------------------------------- validation
    def _validate(self, final: bool = False) -> dict:
        """Validation numbers for selection (never test): the targets' per-item NLL beside
        popularity's and a uniform guess's cross-entropy on the same targets, and NDCG@10 through
        the real inference pipeline when selection uses it. `final` adds the dense towers."""
        self._inference_model = None  # weights changed since the last inference copy
        out = self._valid_nll() if self.cfg.towers.lambda_nig else {}
        sel = self._selection()
        if "inference" in sel or final and self.cfg.towers.lambda_ut:
            mode = self.inference
            try:
                if "inference" in sel:
                    self.inference = sel["inference"]
                    self.gen = torch.Generator().manual_seed(self.seed)  # the same draws at every validation
                    out["valid_NDCG@10"] = validation_ndcg10(self, self.split, self.valid_sample)
                if final and self.cfg.towers.lambda_ut:
                    self.inference = "dense"
                    dense = validation_metrics(self, self.split, self.valid_sample)
                    out.update({f"valid_dense_{k}": v for k, v in dense.items()})
            finally:
                self.inference, self._inference_model = mode, None
        return out

    def _valid_frozen_states(self, prompts: list) -> Ragged | None:
        """With frozen_cache, the validation prompts' frozen-layer output, read from the shared cache
        (or computed there) at the first evaluation of a fit (the prompts and the frozen layers are
        fixed): every evaluation then runs the top layers only, as training does."""
        t = self.cfg.training
        if not t.frozen_cache:
            return None
        if self._valid_frozen is None:
            folder = self.shared_cache / "calrec-frozen" if self.shared_cache else None
            self._valid_frozen = cached_states(self.model, [p.ids for p in prompts], t.train_layers, self.tok.pad_token_id,
                                               self.bf16, self.device, "frozen layers: validation",
                                               {"backbone": t.backbone, "data": self.split.version}, folder)
        return self._valid_frozen

    @torch.no_grad()
    def _valid_nll(self, batch: int = 16) -> dict:
        users = self.valid_sample
        targets = self.split.valid[users]
        total = 0.0
        model = self.model.eval()
        prompts = [self.builder.user_prompt(self.split.train[u], target=int(self.split.valid[u])) for u in users]
        frozen = self._valid_frozen_states(prompts)
        for s in range(0, len(users), batch):
            rows = range(s, min(s + batch, len(users)))
            b = collate([prompts[r] for r in rows], [[0]] * len(rows), list(rows), self.tok.pad_token_id,
                        vocab=torch.tensor(self.vocab) if self.vocab else None, trie=self.trie).to(self.device)
            below = None if frozen is None else pad_states([frozen[r] for r in rows], b.user_ids.shape[1]).to(self.device)
            with autocast(self.bf16, self.device):
                h = hidden_states(model, b.user_ids, b.user_mask, below, self.cfg.training.train_layers)
                lp = token_logprobs(model, h, b.user_ids, b.label_index, b.vocab, b.allowed)
            total -= float(lp.sum())
        share = (self.popularity + 1) / (self.popularity.sum() + len(self.popularity))
        return {"valid_nll": round(total / len(users), 4), "popularity_nll": round(float(-np.log(share[targets]).mean()), 4),
                "uniform_nll": round(math.log(self.split.n_items), 4)}

    def predict(self, histories: list[np.ndarray], users: np.ndarray):
        """Under a multi-process launch each rank ranks every world-th user and all ranks get
        every list (each rank samples its users from its own copy of the seeded generator)."""
        rank, n_ranks = world()
        if n_ranks == 1:
            return self._predict(histories)
        mine = histories[rank::n_ranks]
        shards = gather_objects(self._predict(mine) if len(mine) else [])
        out = [shards[k % n_ranks][k // n_ranks] for k in range(len(histories))]
        return np.stack(out) if out and isinstance(out[0], np.ndarray) else out

    def info(self) -> dict:
        return {"timings": self.timings, "bf16": self.bf16, "device": self.device, "user_batch": self.user_batch,
                "validation": self.measured, "config": self.cfg.as_dict(),
                "trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad)}


def _validation_numbers(saved) -> bool:
    """A validation cache entry is a flat mapping of names to finite numbers."""
    return isinstance(saved, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and math.isfinite(v)
                                           for k, v in saved.items())

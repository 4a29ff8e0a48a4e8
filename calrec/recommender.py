"""CALRec behind the harness's fit/predict contract. Every spec choice is a parameter, so the
ablation rows of CALREC_SPEC are suite variants of this one class:

  stages     zero-shot: stage1=None, stage2_steps=0;  I only: stage2_steps=0;  II only: stage1=None
  losses     lambda_nig / lambda_tt / lambda_ut (contrastive-only: lambda_nig=0 with inference='dense')
  inference  'qrr' | 'top1' | 'greedy' | 'dense' | 'fused'
  controls   shuffle_history=True

Each stage's weights are cached by the configuration that produced them: stage-II variants share
one stage-I run, and the inference variants share one trained model (model selection always runs
QRR, or dense retrieval when there is no L_NIG, so the checkpoint does not depend on `inference`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os

import numpy as np
import torch

from bench.datasets import load_dataset
from bench.models import FitContext
from bench.runner import validation_ndcg10
from bench.split import Split, leave_one_out
from bench.precision import resolve_bf16, resolve_device
from bench.text import BM25Catalog
from calrec.backbone import BUNDLED, add_lora, load_backbone
from calrec.generate import sample
from calrec.retrieve import group_generations, quasi_round_robin, reciprocal_rank_fusion
from calrec.text import PromptBuilder, domain_noun
from calrec.towers import LossWeights, pad_batch, hidden_states, pool, span_mask
from calrec.train import Domain, StageConfig, domain_probabilities, load_trainable_state, train_stage, trainable_state

INFERENCE = ("qrr", "top1", "greedy", "dense", "fused")


class CALRec:
    def __init__(self, backbone: str = BUNDLED, lora_r: int = 0, lora_alpha: int = 32,
                 stage1: dict | None = None, stage2_steps: int = 200,
                 batch_size: int = 8, lr: float = 5e-5, warmup: int = 10, eval_every: int = 50, patience: int = 3,
                 target: str = "random", lambda_nig: float = 1.0, lambda_tt: float = 0.5, lambda_ut: float = 0.5,
                 tau: float = 0.05, pooling: str = "mean", head: bool = False,
                 max_history: int = 20, max_item_tokens: int = 48, max_prompt_tokens: int = 768,
                 inference: str = "qrr", n_samples: int = 10, temperature: float = 0.7, max_new_tokens: int = 40,
                 list_length: int = 100, shuffle_history: bool = False, bf16: bool | str = "auto",
                 user_batch: int | None = None, valid_users: int = 32, threads: int | None = None, device: str = "auto"):
        if inference not in INFERENCE:
            raise ValueError(f"inference must be one of {INFERENCE}, not {inference!r}")
        self.p = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.__dict__.update(self.p)
        # The stored config keeps "auto"; info() records what it resolved to on this machine.
        self.device = resolve_device(device)
        self.bf16 = resolve_bf16(bf16, self.device)
        # Users decoded together; on 2 CPU cores 16 beat 8 and 32 (bench.perf.calrec, 330-token prompts).
        self.user_batch = user_batch or (64 if self.device.startswith("cuda") else 16)
        self.timings: dict = {}
        self._inference_model = None
        self._item_vectors = None

    # ----------------------------------------------------------------- fitting
    def fit(self, split: Split, ctx: FitContext) -> None:
        torch.set_num_threads(self.threads or os.cpu_count() or 1)
        torch.manual_seed(ctx.seed)
        self.seed = ctx.seed
        self.split = split
        texts = [" ".join(a.values()) for a in split.item_text]
        self.model, self.tok = load_backbone(self.backbone, texts, seed=ctx.seed)
        if self.lora_r:
            self.model = add_lora(self.model, self.lora_r, self.lora_alpha)
        self.model.to(self.device)
        hidden = self.model.config.hidden_size
        self.head = torch.nn.Linear(hidden, hidden).to(self.device) if self.p["head"] else None  # optional projection
        self.builder = self._builder(split)
        self.catalog = BM25Catalog(split.item_text)
        self.valid_sample = ctx.valid_users[: self.valid_users]
        weights = self._loss_weights()
        key = self._training_key(ctx.seed)
        if self.stage1:
            key["stage1"] = s1 = {"datasets": [split.dataset], "steps": 200, "exponent": 0.3, **self.stage1}
            rng = np.random.default_rng([ctx.seed, 1])  # one stream per stage: a cached stage I changes nothing after it
            self._cached_stage("stage1", key, ctx, lambda: self._stage1(split, s1, ctx, rng, weights))
        if self.stage2_steps:
            key["stage2"] = {"dataset": split.dataset, "steps": self.stage2_steps, "eval_every": self.eval_every,
                             "patience": self.patience, "select": self._selection(), "valid": self._valid_digest()}
            cfg = self._stage_config(self.stage2_steps)
            target = Domain(split.dataset, split, self.builder, 0)
            rng = np.random.default_rng([ctx.seed, 2])
            self._cached_stage("stage2", key, ctx, lambda: train_stage(
                self.model, self.head, [target], np.ones(1), cfg, weights, rng, self.tok.pad_token_id,
                self._validate, ctx.curves, "stage2"))
        self.model.eval()
        self._inference_model = None
        self.gen = torch.Generator().manual_seed(self.seed)  # test sampling starts from the seed

    def _builder(self, split: Split) -> PromptBuilder:
        return PromptBuilder(self.tok, split.item_text, domain_noun(split.dataset), self.max_history,
                             self.max_item_tokens, self.max_prompt_tokens)

    def _loss_weights(self) -> LossWeights:
        return LossWeights(self.lambda_nig, self.lambda_tt, self.lambda_ut, self.tau, self.pooling)

    def _stage_config(self, steps: int, eval_every: int | None = None) -> StageConfig:
        return StageConfig(steps=steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           eval_every=self.eval_every if eval_every is None else eval_every, patience=self.patience,
                           target=self.target, shuffle_history=self.shuffle_history, bf16=self.bf16, device=self.device)

    def _training_key(self, seed: int) -> dict:
        """Everything that shapes the trained weights (and nothing that only shapes inference)."""
        key = {k: self.p[k] for k in ("backbone", "lora_r", "lora_alpha", "head", "batch_size", "lr", "warmup", "target",
                                      "lambda_nig", "lambda_tt", "lambda_ut", "tau", "pooling", "max_history",
                                      "max_item_tokens", "max_prompt_tokens", "shuffle_history")}
        return {**key, "bf16": self.bf16, "seed": seed}

    def _selection(self) -> dict:
        """How checkpoints are chosen: QRR through generation, or dense retrieval without L_NIG."""
        if not self.lambda_nig:
            return {"inference": "dense"}
        return {"inference": "qrr", **{k: self.p[k] for k in ("n_samples", "temperature", "max_new_tokens", "list_length")}}

    def _valid_digest(self) -> str:
        return hashlib.sha1(np.asarray(self.valid_sample, dtype=np.int64).tobytes()).hexdigest()[:16]

    def _cached_stage(self, stage: str, key: dict, ctx: FitContext, train) -> None:
        """Load the stage's weights (and its training curve) if this exact configuration ran before;
        else train and save them atomically."""
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = ctx.extra.get("shared_cache", ctx.workdir) / f"calrec-{stage}" / f"{digest}.pt"
        if path.exists():
            saved = torch.load(path, map_location=self.device, weights_only=False)
            load_trainable_state(self.model, self.head, saved["state"])
            ctx.curves.extend(saved.get("curves", []))
            self.timings[stage] = {**saved["timing"], "cached": str(path)}
            return
        first = len(ctx.curves)
        timing = train()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state": trainable_state(self.model, self.head), "timing": timing, "key": key,
                    "curves": ctx.curves[first:]}, tmp)
        os.replace(tmp, path)
        self.timings[stage] = timing

    def _stage1(self, split: Split, s1: dict, ctx: FitContext, rng, weights) -> dict:
        """The multi-domain stage over every named dataset's training sequences."""
        domains, offset = [], 0
        for entry in s1["datasets"]:  # a spec string, or {spec: ..., loader params...}
            spec, params = (entry, {}) if isinstance(entry, str) else (entry["spec"], {k: v for k, v in entry.items() if k != "spec"})
            dsplit = split if spec == split.dataset else leave_one_out(load_dataset(spec, **params))
            domains.append(Domain(spec, dsplit, self._builder(dsplit), offset))
            offset += dsplit.n_items
        probs = domain_probabilities(domains, s1["exponent"])
        # No model selection in stage I: the target's validation users belong to stage II.
        timing = train_stage(self.model, self.head, domains, probs, self._stage_config(s1["steps"], 0), weights, rng,
                             self.tok.pad_token_id, None, ctx.curves, "stage1")
        timing["domain_probabilities"] = {d.name: p for d, p in zip(domains, probs.round(4).tolist())}
        return timing

    def _validate(self) -> float:
        """NDCG@10 on validation users through the real inference pipeline (never test)."""
        self._inference_model = None  # weights changed since the last inference copy
        mode, self.inference = self.inference, self._selection()["inference"]
        self.gen = torch.Generator().manual_seed(self.seed)  # the same draws at every validation: less noisy selection
        try:
            return validation_ndcg10(self, self.split, self.valid_sample)
        finally:
            self.inference, self._inference_model = mode, None

    # --------------------------------------------------------------- inference
    def _infer(self):
        """The model for inference: a bf16 copy where bf16 is native (faster generation), else the
        model itself. Reset after every weight change."""
        if self._inference_model is None:
            self._inference_model = copy.deepcopy(self.model).to(torch.bfloat16).eval() if self.bf16 else self.model.eval()
            self._item_vectors = None
        return self._inference_model

    def _prompts(self, histories: list[np.ndarray]) -> list:
        if self.shuffle_history:
            rng = np.random.default_rng(0)
            histories = [rng.permutation(h) for h in histories]
        return [self.builder.user_prompt(np.asarray(h)) for h in histories]

    def _generated_lists(self, histories: list[np.ndarray]) -> list[list[int]]:
        model = self._infer()
        prompts = self._prompts(histories)
        greedy = self.inference == "greedy"
        n, temp = (1, 0.0) if greedy else (self.n_samples, self.temperature)
        stop = {self.tok.eos_token_id, *self.builder.newline}
        out = []
        for start in range(0, len(prompts), self.user_batch):
            chunk = prompts[start : start + self.user_batch]
            samples = sample(model, [p.ids for p in chunk], n, temp, self.max_new_tokens, stop, self.tok.pad_token_id, self.gen)
            for k, user_samples in enumerate(samples):
                texts = [self.tok.decode(s.tokens, skip_special_tokens=True) for s in user_samples]
                groups = group_generations(texts, [s.logprob for s in user_samples])
                exclude = set(histories[start + k].tolist())
                depth = 1 if self.inference == "top1" else None
                out.append(quasi_round_robin(groups, self.catalog, self.list_length, exclude, depth))
        return out

    @torch.no_grad()
    def _vectors(self, model, prompts) -> torch.Tensor:
        ids, mask = (t.to(self.device) for t in pad_batch([p.ids for p in prompts], self.tok.pad_token_id))
        span = span_mask([p.history for p in prompts], ids.shape[1]).to(self.device)
        v = pool(hidden_states(model, ids, mask), span, self.pooling)
        return self.head(v.float()) if self.head is not None else v.float()

    @torch.no_grad()
    def _dense_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        model = self._infer()
        if self._item_vectors is None:
            vecs = []
            items = [self.builder.item_ids(i) for i in range(self.split.n_items)]
            for s in range(0, len(items), 64):
                ids, mask = (t.to(self.device) for t in pad_batch(items[s : s + 64], self.tok.pad_token_id))
                v = pool(hidden_states(model, ids, mask), mask.bool(), self.pooling).float()
                vecs.append(self.head(v) if self.head is not None else v)
            self._item_vectors = torch.nn.functional.normalize(torch.cat(vecs), dim=-1)
        users = torch.nn.functional.normalize(self._vectors(model, self._prompts(histories)), dim=-1)
        return (users @ self._item_vectors.T).cpu().numpy()

    def predict(self, histories: list[np.ndarray], users: np.ndarray):
        if self.inference == "dense":
            return self._dense_scores(histories)
        lists = self._generated_lists(histories)
        if self.inference == "fused":
            dense = self._dense_scores(histories)
            return np.stack([reciprocal_rank_fusion([lst], d, self.split.n_items) for lst, d in zip(lists, dense)])
        return lists

    def info(self) -> dict:
        return {"timings": self.timings, "bf16": self.bf16, "device": self.device, "user_batch": self.user_batch,
                "trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad)}

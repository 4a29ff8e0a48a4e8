"""One finetuning stage: batches from one or more domains' TRAINING sequences, the CALRec loss,
AdamW with warmup, and model selection on validation through a callback (the real inference).

Stage I samples a domain per batch with probability proportional to n_users ** exponent
(CALREC_SPEC: Two stages); stage II is the same loop with the target domain alone. Only
`split.train` is ever read here, so no validation or test item of any domain reaches training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.precision import autocast
from bench.split import Split
from calrec.text import PromptBuilder
from calrec.towers import Batch, LossWeights, calrec_loss, collate


@dataclass
class Domain:
    name: str
    split: Split
    builder: PromptBuilder
    key_offset: int  # item keys are key_offset + item index: unique across domains

    @property
    def n_users(self) -> int:
        return self.split.n_users


@dataclass
class StageConfig:
    steps: int
    batch_size: int = 8
    lr: float = 1e-4
    warmup: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 0  # 0: no model selection inside the stage
    patience: int = 3
    target: str = "random"  # which training position is the target: 'random' prefix or 'last'
    shuffle_history: bool = False  # control: destroys order information
    bucket: int = 8  # batches drawn together and sorted by length (less padding)
    bf16: bool = True
    device: str = "cpu"


def domain_probabilities(domains: list[Domain], exponent: float) -> np.ndarray:
    w = np.array([d.n_users for d in domains], dtype=np.float64) ** exponent
    return w / w.sum()


def training_examples(domain: Domain, n: int, rng: np.random.Generator, target: str, shuffle_history: bool):
    """n (prompt, item tokens, item key) triples from the domain's training sequences only."""
    train = domain.split.train
    eligible = np.flatnonzero(np.fromiter((len(s) >= 2 for s in train), dtype=bool, count=len(train)))
    out = []
    for u in rng.choice(eligible, size=n):
        seq = train[u]
        t = int(rng.integers(1, len(seq))) if target == "random" else len(seq) - 1
        hist = seq[:t]
        if shuffle_history:
            hist = rng.permutation(hist)
        item = int(seq[t])
        out.append((domain.builder.user_prompt(hist, target=item), domain.builder.item_ids(item), domain.key_offset + item))
    return out


def batches(domains: list[Domain], probs: np.ndarray, cfg: StageConfig, rng: np.random.Generator, pad: int) -> Iterator[Batch]:
    """Single-domain batches (in-batch negatives come from the same catalog), length-bucketed."""
    while True:
        d = domains[rng.choice(len(domains), p=probs)]
        pool = training_examples(d, cfg.batch_size * cfg.bucket, rng, cfg.target, cfg.shuffle_history)
        pool.sort(key=lambda ex: len(ex[0].ids))
        chunks = [pool[i : i + cfg.batch_size] for i in range(0, len(pool), cfg.batch_size)]
        for k in rng.permutation(len(chunks)):
            c = chunks[k]
            yield collate([e[0] for e in c], [e[1] for e in c], [e[2] for e in c], pad)


def trainable_state(model, head) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items() if k in names}
    if head is not None:
        state.update({f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    return state


def load_trainable_state(model, head, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")}, strict=False)
    if head is not None:
        head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})


def train_stage(model, head, domains: list[Domain], probs: np.ndarray, cfg: StageConfig, weights: LossWeights,
                rng: np.random.Generator, pad: int, validate: Callable[[], float] | None, curves: list[dict],
                stage: str) -> dict:
    """Runs the stage; with `validate` and eval_every, restores the best validated weights."""
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    data = batches(domains, probs, cfg, rng, pad)
    best, best_state, bad, tokens, train_s = None, None, 0, 0, 0.0
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc=f"CALRec {stage}", leave=False)
    for step in bar:
        t0 = time.perf_counter()
        batch = next(data).to(cfg.device)
        with autocast(cfg.bf16, cfg.device):
            loss, parts = calrec_loss(model, head, batch, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += batch.n_tokens
        train_s += time.perf_counter() - t0  # validation time is not training throughput
        row = {"stage": stage, "step": step, **{f"loss_{k}": round(v, 5) for k, v in parts.items()},
               "tokens_per_s": round(tokens / train_s, 1)}
        if validate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            model.eval()
            row["valid_NDCG@10"] = score = validate()
            model.train()
            if best is None or score > best:
                best, best_state, bad = score, trainable_state(model, head), 0
            else:
                bad += 1
        curves.append(row)
        bar.set_postfix(loss=f"{parts['total']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        if bad >= cfg.patience:
            break
    if best_state is not None:
        load_trainable_state(model, head, best_state)
    model.eval()
    return {"steps": step, "tokens": tokens, "train_seconds": round(train_s, 1),
            "tokens_per_s": round(tokens / max(train_s, 1e-9), 1), "best_valid_NDCG@10": best}

"""One finetuning stage: batches from one or more domains' TRAINING sequences, the CALRec loss,
AdamW with warmup (then constant or cosine decay), and model selection on validation through a
callback.

Stage I samples a domain per batch with probability proportional to n_users ** exponent
(docs/calrec-spec.md: Two stages); stage II is the same loop with the target domain alone. Only
`split.train` is ever read here, so no validation or test item of any domain reaches training.

One optimiser step takes `batch_size` examples (across every rank of a data-parallel launch,
calrec/parallel.py), run as forward passes of `micro_batch` rows per rank with gradients
accumulated; the contrastive losses contrast the rows of one forward pass across ranks, or groups
of `contrastive_batch` of them. Defaults (one pass of the whole batch) are the paper's step.

Examples (`examples`):
  sampled  a random user, then a random target position (or the last one): the first version
  epochs   every (user, position) pair once per epoch, shuffled; with nig_targets='all', windows of
           max_history + 1 items tiled from the end of each sequence, so every training item is a
           label exactly once per epoch. With `window_tilings` k > 1, epoch e tiles from (e mod k) *
           window / k items before the end instead (and adds the window ending at the last item, so
           every item is still a label each epoch; a few of the newest twice): an item meets other
           neighbours and another position in its window from one epoch to the next, where one tiling
           shows the model the same windows every epoch
"""
from __future__ import annotations

import ctypes
import functools
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.precision import autocast
from bench.split import Split
from bench.execute.distributed import agree, world
from calrec.backbone import compile_layers
from calrec.config import TextConfig, TowerConfig, TrainConfig
from calrec.frozen import FrozenStates
from calrec.packed import pack, packed_loss
from calrec.parallel import sum_across_ranks, sum_gradients
from calrec.text import PromptBuilder
from calrec.towers import Batch, LossWeights, StepShare, calrec_loss, collate, nig_normaliser

# One source of defaults: a stage's settings default to CALRec's switches (calrec/config.py).
_TRAIN, _TOWERS, _TEXT = TrainConfig(), TowerConfig(), TextConfig()


@dataclass
class Domain:
    name: str
    split: Split
    builder: PromptBuilder
    key_offset: int  # item keys are key_offset + item index: unique across domains
    frozen: tuple[FrozenStates, ...] | None = None  # the frozen layers' output for each tiling's windows (calrec/frozen.py)

    @property
    def n_users(self) -> int:
        return self.split.n_users

    def item_logq(self) -> np.ndarray:
        """log of each item's share of training events (add-one smoothed): in-batch negatives'
        sampling probability, for the logQ correction."""
        counts = np.bincount(np.concatenate(self.split.train), minlength=self.split.n_items) + 1.0
        return np.log(counts / counts.sum())


@dataclass
class StageConfig:
    steps: int
    batch_size: int = _TRAIN.batch_size
    lr: float = _TRAIN.lr
    warmup: int = _TRAIN.warmup
    schedule: str = _TRAIN.schedule  # after warmup: 'constant' or 'cosine' (to 10% of lr at the last step)
    weight_decay: float = _TRAIN.weight_decay
    grad_clip: float = 1.0
    eval_every: int = 0  # 0: no model selection inside the stage
    patience: int = _TRAIN.patience
    target: str = _TRAIN.target  # which training position is the target: 'random' prefix or 'last'
    examples: str = _TRAIN.examples  # 'sampled' or 'epochs' (see the module docstring)
    nig_targets: str = _TOWERS.nig_targets  # 'last' (paper) or 'all' item texts in the prompt
    nig_per: str = _TOWERS.nig_per  # L_NIG's mean over labelled 'token's or 'item's
    vocab: str = _TOWERS.vocab  # LM head over the 'full' vocabulary, the domain's 'catalog' tokens, or its item 'trie'
    shuffle_history: bool = _TEXT.shuffle_history  # control: destroys order information
    window_tilings: int = _TRAIN.window_tilings  # epochs' windows: tilings shifted by window / k, in turn
    bucket: int = 8  # batches drawn together and sorted by length (less padding)
    micro_batch: int = _TRAIN.micro_batch  # rows per forward pass and rank (0: the step's batch split over the ranks)
    contrastive_batch: int = _TRAIN.contrastive_batch  # rows each InfoNCE row contrasts with (0: one forward pass, all ranks)
    log_every: int = _TRAIN.log_every  # steps per curve row: reading the losses is a host sync (idles a GPU)
    fused: bool = False  # fused AdamW kernel
    pack: int = 0  # >0: each forward's texts packed into rows of this many tokens (calrec/packed.py)
    compile: bool = False  # torch.compile each decoder layer (dynamic shapes): fused kernels after a warm-up
    bf16: bool = True
    device: str = "cpu"

    def forward_plan(self, n_ranks: int) -> tuple[int, int, int]:
        """(rows per forward and rank, rows per forward over all ranks, contrastive group)."""
        micro = self.micro_batch or self.batch_size // n_ranks
        rows = micro * n_ranks
        group = self.contrastive_batch or rows
        if micro < 1 or self.batch_size % rows:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of micro_batch {micro} x {n_ranks} rank(s)")
        if rows % group:
            raise ValueError(f"contrastive_batch {group} must divide the rows of one forward pass ({micro} x {n_ranks} "
                             f"rank(s)): in-batch negatives come from one pass")
        return micro, rows, group


def domain_probabilities(domains: list[Domain], exponent: float) -> np.ndarray:
    w = np.array([d.n_users for d in domains], dtype=np.float64) ** exponent
    return w / w.sum()


def tiling_shifts(cfg: StageConfig, window: int) -> list[int]:
    """How far before the end each tiling of the epochs' windows starts (one tiling: [0])."""
    return [k * window // cfg.window_tilings for k in range(cfg.window_tilings)]


def epoch_positions(train: list[np.ndarray], cfg: StageConfig, window: int, shift: int = 0) -> np.ndarray:
    """(user, target position) pairs that make up one epoch of a domain (`shift`: the tiling's, see above)."""
    pairs = []
    for u, seq in enumerate(train):
        if len(seq) < 2:
            continue
        if cfg.nig_targets == "all":  # every item is labelled once: windows tiled back from the end
            ends = range(len(seq) - 1, -1, -window)  # (the oldest window may hold a target alone)
            if shift:  # tiled from `shift` items before the end, and the newest items in the window ending last
                ends = [len(seq) - 1, *range(len(seq) - 1 - shift, -1, -window)]
        elif cfg.target == "last":
            ends = [len(seq) - 1]
        else:
            ends = range(1, len(seq))
        pairs.extend((u, t) for t in ends)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


class Examples:
    """A domain's stream of (prompt, item tokens, item key, logq) examples; counts epochs seen."""

    def __init__(self, domain: Domain, cfg: StageConfig, rng: np.random.Generator):
        self.d, self.cfg, self.rng = domain, cfg, rng
        train = domain.split.train
        self.eligible = np.flatnonzero(np.fromiter((len(s) >= 2 for s in train), dtype=bool, count=len(train)))
        window = domain.builder.max_history + 1
        self.tilings = ([epoch_positions(train, cfg, window, s) for s in tiling_shifts(cfg, window)]
                        if cfg.examples == "epochs" else None)
        self.order, self.at, self.seen, self.epochs_started = np.empty(0, dtype=np.int64), 0, 0, 0
        self.logq = domain.item_logq()
        self.vocab = torch.tensor(domain.builder.vocab) if cfg.vocab in ("catalog", "trie") else None
        self.trie = domain.builder.trie if cfg.vocab == "trie" else None
        # Packed steps gather the trie's masks on the device from this table (calrec/packed.py).
        self.branches = self.trie.branch_masks(self.vocab).to(cfg.device) if self.trie and cfg.pack else None

    @property
    def tiling(self) -> int:
        """The tiling the current epoch draws from: the tilings in turn, epoch by epoch (0 before the first)."""
        return max(self.epochs_started - 1, 0) % len(self.tilings) if self.tilings is not None else 0

    @property
    def epoch(self) -> np.ndarray | None:
        """The current epoch's (user, target position) pairs; None where examples are sampled."""
        return self.tilings[self.tiling] if self.tilings is not None else None

    @property
    def epochs(self) -> float:
        """Passes so far: whole epochs plus the running one's share (tilings differ in size, so windows seen
        over the current epoch's size would be off); sampled examples count against every (user, position)."""
        if self.tilings is not None:
            return max(self.epochs_started - 1, 0) + self.at / max(len(self.epoch), 1)
        return self.seen / max(sum(len(s) - 1 for s in self.d.split.train if len(s) >= 2), 1)

    def _positions(self, n: int) -> list[tuple[int, int, int, int]]:
        """(user, target position, window index in the epoch; -1 when sampled, the epoch's tiling)."""
        if self.tilings is None:
            train = self.d.split.train
            out = []
            for u in self.rng.choice(self.eligible, size=n):
                t = int(self.rng.integers(1, len(train[u]))) if self.cfg.target == "random" else len(train[u]) - 1
                out.append((int(u), t, -1, 0))
            return out
        out = []
        while len(out) < n:
            if self.at == len(self.order):
                self.epochs_started += 1
                self.order, self.at = self.rng.permutation(len(self.epoch)), 0
            take, k = self.order[self.at : self.at + n - len(out)], self.tiling
            self.at += len(take)
            out.extend((int(u), int(t), int(j), k) for j, (u, t) in zip(take, self.epoch[take]))
        return out

    def draw(self, n: int) -> list[tuple]:
        """(prompt, item tokens, item key, logq[, cached window states, cached item states]) per example."""
        out = []
        for u, t, j, k in self._positions(n):
            seq = self.d.split.train[u]
            item = int(seq[t])
            head = (self.d.builder.item_ids(item), self.d.key_offset + item, float(self.logq[item]))
            if self.d.frozen is not None:  # the window as it was cached (its history shuffled once, if at all)
                frozen = self.d.frozen[k]
                out.append((frozen.prompts[j], *head, frozen.windows[j], frozen.items[item]))
                continue
            hist = seq[:t]
            if self.cfg.shuffle_history:
                hist = self.rng.permutation(hist)
            out.append((self.d.builder.user_prompt(hist, target=item), *head))
        self.seen += n
        return out


def steps(streams: list[Examples], probs: np.ndarray, cfg: StageConfig, rng: np.random.Generator) -> Iterator[tuple[Examples, list]]:
    """Each step's examples and their stream: single-domain (in-batch negatives come from the same
    catalog), length-bucketed. Every rank draws the same steps (same seed)."""
    while True:
        s = streams[rng.choice(len(streams), p=probs)]
        pool = s.draw(cfg.batch_size * cfg.bucket)
        pool.sort(key=lambda ex: len(ex[0].ids))
        chunks = [pool[i : i + cfg.batch_size] for i in range(0, len(pool), cfg.batch_size)]
        for k in rng.permutation(len(chunks)):
            yield s, chunks[k]


def collate_examples(rows: list, s: Examples, cfg: StageConfig, pad: int) -> Batch:
    frozen = ([e[4] for e in rows], [e[5] for e in rows], s.d.frozen[0].top) if s.d.frozen is not None else None
    return collate([e[0] for e in rows], [e[1] for e in rows], [e[2] for e in rows], pad, cfg.nig_targets,
                   [e[3] for e in rows], s.vocab, s.trie, frozen, masks=s.branches is None)


def batches(streams: list[Examples], probs: np.ndarray, cfg: StageConfig, rng: np.random.Generator, pad: int) -> Iterator[Batch]:
    """Each step's examples as one batch."""
    for s, rows in steps(streams, probs, cfg, rng):
        yield collate_examples(rows, s, cfg, pad)


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


def lr_factor(step: int, cfg: StageConfig) -> float:
    """Linear warmup, then constant or cosine decay to 10% at the last step."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        done = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(done, 1.0)))
    raise ValueError(f"schedule must be 'constant' or 'cosine', not {cfg.schedule!r}")


def step_gradients(model, head, s: Examples, rows: list, cfg: StageConfig, weights: LossWeights, pad: int,
                   params: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """This rank's forward and backward passes over one step's rows (micro-batches accumulated),
    then gradients summed across ranks: every rank holds the step's gradient. Returns this rank's
    loss parts (summed over its passes; summed across ranks they are the step's losses)."""
    rank, n_ranks = world()
    micro, forward, group = cfg.forward_plan(n_ranks)
    share = StepShare(sum(nig_normaliser(e[0], cfg.nig_targets, cfg.nig_per) for e in rows), forward / len(rows), n_ranks, group)
    out: dict[str, torch.Tensor] = {}
    for at in range(0, len(rows), forward):
        batch = collate_examples(rows[at + rank * micro : at + (rank + 1) * micro], s, cfg, pad)
        with autocast(cfg.bf16, cfg.device):
            if cfg.pack:  # the same losses and gradients, without padding, both towers in one pass
                loss, parts = packed_loss(model, head, pack(batch, cfg.pack, branches=s.branches).to(cfg.device), weights, share)
            else:
                loss, parts = calrec_loss(model, head, batch.to(cfg.device), weights, share)
        loss.backward()
        for k, v in parts.items():
            out[k] = out[k] + v if k in out else v
    sum_gradients(params)
    return out


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once; None where there is none (not Linux, musl, ...)."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None) if sys.platform.startswith("linux") else None
    except OSError:
        return None


def return_freed_memory(device: str) -> None:
    """Hands the heap memory a CPU step freed back to the system. glibc keeps it in its arenas,
    fragmented by the steps' varying shapes: on the paper's setup (every layer, 8 rows a pass) the
    resident memory between steps grew ~0.4 GB a step, to 24 GB (killed) by step 71; trimmed after
    each step it stayed near 3 GB, peaking ~16 GB inside a step (2-core Xeon, bf16). Costs
    milliseconds a step; the numbers do not change."""
    trim = _malloc_trim()
    if trim is not None and str(device) == "cpu":
        trim(0)


def train_stage(model, head, domains: list[Domain], probs: np.ndarray, cfg: StageConfig, weights: LossWeights,
                rng: np.random.Generator, pad: int, validate: Callable[[], dict] | None, curves: list[dict],
                stage: str, select: str = "valid_NDCG@10") -> dict:
    """Runs the stage. With `validate` and eval_every, `validate()` returns a dict of validation
    numbers; the weights with the best `select` entry (lowest for an NLL, else highest) are kept."""
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head is not None else [])
    if cfg.compile:
        compile_layers(model)
    groups = params if not cfg.weight_decay else [  # decay the matrices only: norm gains and biases keep their scale
        {"params": [p for p in params if p.ndim >= 2]}, {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    streams = [Examples(d, cfg, rng) for d in domains]
    data = steps(streams, probs, cfg, rng)
    cfg.forward_plan(world()[1])  # a batch the ranks cannot split fails before the first step
    lower_is_better = "nll" in select.lower()
    best, best_state, best_step, bad, tokens, train_s = None, None, 0, 0, 0, 0.0
    window: dict[str, torch.Tensor] = {}  # loss parts summed on the device since the last curve row
    window_steps = 0  # steps in `window`: an evaluation row ends a window early
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc=f"CALRec {stage}", leave=False)
    for step in bar:
        t0 = time.perf_counter()
        s, rows = next(data)
        for k, v in step_gradients(model, head, s, rows, cfg, weights, pad, params).items():
            window[k] = window[k] + v if k in window else v
        window_steps += 1
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return_freed_memory(cfg.device)
        tokens += sum(len(e[0].ids) + len(e[1]) for e in rows)  # every rank's tokens, counted without a sync
        train_s += time.perf_counter() - t0  # validation time is not training throughput
        evaluate = validate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps)
        if not (evaluate or step % cfg.log_every == 0 or step == cfg.steps):
            continue
        parts = sum_across_ranks(torch.stack(list(window.values()))).div(window_steps).tolist()
        row = {"stage": stage, "step": step, "epochs": round(sum(s.epochs for s in streams), 4),
               **{f"loss_{k}": round(v, 5) for k, v in zip(window, parts)},
               "lr": round(opt.param_groups[0]["lr"], 8), "tokens_per_s": round(tokens / train_s, 1),
               "train_seconds": round(train_s, 1)}
        window, window_steps = {}, 0
        if evaluate:
            model.eval()
            row.update(agree(validate()))  # every rank follows rank 0's selection
            model.train()
            score = row[select]
            if best is None or (score < best if lower_is_better else score > best):
                best, best_state, best_step, bad = score, trainable_state(model, head), step, 0
            else:
                bad += 1
        curves.append(row)
        bar.set_postfix(loss=f"{row['loss_total']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}", ep=f"{row['epochs']:.2f}")
        if bad >= cfg.patience:
            break
    if best_state is not None:
        load_trainable_state(model, head, best_state)
    model.eval()
    return {"steps": step, "tokens": tokens, "epochs": round(sum(s.epochs for s in streams), 4),
            "train_seconds": round(train_s, 1), "tokens_per_s": round(tokens / max(train_s, 1e-9), 1),
            "select": select, f"best_{select}": best, "best_step": best_step}

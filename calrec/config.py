"""CALRec's switches, grouped by the stage they act on. A suite file lists them flat under
`params:`; `CALRecConfig.from_params` sorts each into its group and refuses unknown names.

Defaults are the paper-faithful configuration (docs/calrec-spec.md), except model selection, which defaults
to the validation targets' NLL (NDCG@10 of QRR on a few dozen users is noise). These dataclasses
are the one source of defaults: `calrec.train.StageConfig` reads its own from them. The CPU recipe
(suites `quick`, `ablation`) switches to the compact template, all-item supervision under the item
trie, per-item loss, cached frozen layers and whole-catalog likelihood ranking.
"""
from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields

from bench.errors import BenchError
from bench.suites.schema import check_params

INFERENCE = ("qrr", "top1", "greedy", "dense", "fused", "likelihood")
FILLS = ("bm25", "popularity", "dense", "none")
SELECT = ("nll", "ndcg")


@dataclass
class TextConfig:
    template: str = "paper"  # 'paper' (Name: value, item prefixes) or 'compact' (Title (Year) lines)
    item_fields: list[str] | None = None  # attributes in the item text (None: all, in the dataset's order)
    max_history: int = 20
    max_item_tokens: int = 48
    max_prompt_tokens: int = 768
    shuffle_history: bool = False  # control row: destroys order information
    natural_titles: bool = False  # titles as written ("The Usual Suspects", not "Usual Suspects, The"), each
                                  # compact line opened by a space so a title starts with its word token


@dataclass
class TowerConfig:
    lambda_nig: float = 1.0
    lambda_tt: float = 0.5
    lambda_ut: float = 0.5
    nig_targets: str = "last"  # 'last' (paper): the target item; 'all': every item text in the prompt
    vocab: str = "full"  # LM softmax over the 'full' vocabulary, the 'catalog' tokens, or the catalog item 'trie'
                         # (tokens that continue some item: an item-level distribution); training, sampling, likelihood
    tau: float = 0.05
    pooling: str = "mean"  # 'mean' or 'last' over a span
    user_pooling: str = "history"  # v_U over: 'history' span (paper), 'items' text only, 'next' prediction state
    head: bool = False  # linear projection on top of the pooled vectors
    logq: bool = False  # popularity correction of the in-batch softmax
    nig_per: str = "token"  # L_NIG: mean over labelled 'token's (paper), or over 'item's (each item's token losses summed)


@dataclass
class TrainConfig:
    backbone: str = "bundled:smollm2-135m"
    lora_r: int = 0  # >0: LoRA adapters of this rank on the top train_layers layers (0: all) instead of training them
    lora_alpha: int = 32
    train_layers: int = 0  # 0: all; N: only the top N decoder layers and the final norm (embeddings frozen), or LoRA there
    frozen_cache: bool = False  # with train_layers and examples 'epochs': the frozen layers run once per window (calrec/frozen.py)
    stage1: dict | None = None
    stage2_steps: int = 200
    batch_size: int = 8  # examples per optimiser step (all ranks)
    micro_batch: int = 0  # rows per forward pass and rank, gradients accumulated (0: batch_size / ranks)
    contrastive_batch: int = 0  # in-batch negatives: rows per InfoNCE group (0: one forward pass, all ranks)
    fused_adamw: bool | str = "auto"  # fused AdamW kernel; auto: on a GPU
    log_every: int = 1  # steps per training-curve row (each row reads the losses: a host sync)
    pack: int = 0  # >0: both towers' texts packed into rows of this many tokens, one forward (calrec/packed.py)
    compile: bool = False  # torch.compile each decoder layer for training (dynamic shapes; pays off on a GPU)
    lr: float = 5e-5
    weight_decay: float = 0.0  # AdamW's decoupled decay on the trained weights
    dropout: float = 0.0  # on the residual branches (attention output, MLP) of the trained decoder layers
    warmup: int = 10
    schedule: str = "constant"  # 'constant' or 'cosine' after warmup
    examples: str = "sampled"  # 'sampled' (random user, random position) or 'epochs'
    window_tilings: int = 1  # epochs' windows: k tilings in turn, each shifted back by window/k items (calrec/train.py)
    target: str = "random"
    eval_every: int = 50
    patience: int = 3
    select: str = "nll"  # 'nll' of the validation targets (low noise), or 'ndcg' through the real inference pipeline
    valid_users: int = 32
    bf16: bool | str = "auto"
    threads: int | None = None
    device: str = "auto"


@dataclass
class InferenceConfig:
    inference: str = "qrr"
    n_samples: int = 10
    temperature: float = 0.7
    max_new_tokens: int = 40
    list_length: int = 100
    fill: str = "bm25"  # after each generation's own best match: deeper BM25 ranks (paper), popularity, dense, none
    candidates: dict | str = "auto"  # likelihood: 'all' items, or {qrr: M, dense: M, popularity: M}; auto: all on a GPU
    user_batch: int | None = None


STAGE1 = {"steps": 200, "exponent": 0.3}  # stage I's defaults; `datasets` defaults to the target alone


def stage1_settings(stage1: dict, target: str | None = None) -> dict:
    return {"datasets": [target], **STAGE1, **stage1}


GROUPS = {"text": TextConfig, "towers": TowerConfig, "training": TrainConfig, "inference": InferenceConfig}


@dataclass
class CALRecConfig:
    text: TextConfig = field(default_factory=TextConfig)
    towers: TowerConfig = field(default_factory=TowerConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @classmethod
    def from_params(cls, params: dict) -> "CALRecConfig":
        owner = {f.name: group for group, dc in GROUPS.items() for f in fields(dc)}
        unknown = sorted(set(params) - set(owner))
        if unknown:
            raise BenchError(f"calrec: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(owner))})")
        grouped: dict[str, dict] = {g: {} for g in GROUPS}
        for k, v in params.items():
            grouped[owner[k]][k] = v
        for g, kw in grouped.items():
            check_params("calrec", typing.get_type_hints(GROUPS[g]), kw)
        cfg = cls(**{g: GROUPS[g](**kw) for g, kw in grouped.items()})
        cfg.check()
        return cfg

    def check(self) -> None:
        for name, value, allowed in (("inference", self.inference.inference, INFERENCE), ("fill", self.inference.fill, FILLS),
                                     ("select", self.training.select, SELECT),
                                     ("nig_targets", self.towers.nig_targets, ("last", "all")),
                                     ("nig_per", self.towers.nig_per, ("token", "item")),
                                     ("vocab", self.towers.vocab, ("full", "catalog", "trie")),
                                     ("user_pooling", self.towers.user_pooling, ("history", "items", "next")),
                                     ("template", self.text.template, ("paper", "compact")),
                                     ("schedule", self.training.schedule, ("constant", "cosine")),
                                     ("examples", self.training.examples, ("sampled", "epochs"))):
            if value not in allowed:
                raise BenchError(f"calrec: {name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.towers.vocab == "trie" and self.text.template == "paper" and self.towers.nig_targets == "all":
            raise BenchError("calrec: vocab 'trie' with nig_targets 'all' needs template 'compact' (the paper template "
                             "ends history items with a newline and the target with eos)")
        t = self.training
        if not 0.0 <= t.dropout < 1.0:
            raise BenchError(f"calrec: dropout must be in [0, 1), not {t.dropout!r}")
        if not t.weight_decay >= 0.0:
            raise BenchError(f"calrec: weight_decay must be >= 0, not {t.weight_decay!r}")
        if t.frozen_cache and not (t.train_layers and t.examples == "epochs"):
            raise BenchError("calrec: frozen_cache needs train_layers > 0 and examples 'epochs' "
                             "(the cached layers must be frozen and the windows fixed)")
        if not (isinstance(t.window_tilings, int) and t.window_tilings >= 1) or (
                t.window_tilings > 1 and not (t.examples == "epochs" and self.towers.nig_targets == "all")):
            raise BenchError(f"calrec: window_tilings must be an integer >= 1, and above 1 needs examples 'epochs' and "
                             f"nig_targets 'all' (it shifts the tiled windows), not {t.window_tilings!r}")
        if t.pack < 0 or (t.pack and t.frozen_cache):
            raise BenchError(f"calrec: pack must be >= 0 and needs frozen_cache off (packed steps run every layer), "
                             f"not pack {t.pack!r} with frozen_cache {t.frozen_cache!r}")
        c = self.inference.candidates
        if not (c in ("auto", "all") or (isinstance(c, dict) and c and set(c) <= {"qrr", "dense", "popularity"}
                                         and all(isinstance(v, int) and v > 0 for v in c.values()))):
            raise BenchError(f"calrec: candidates must be 'auto', 'all' or {{qrr|dense|popularity: <positive int>}}, not {c!r}")

    def as_dict(self) -> dict:
        return asdict(self)

"""What each switch of CALRec's CPU recipe buys in training speed, on this machine, with the bundled
SmolLM2-135M and real ML-100k windows.

    python -m bench.perf.calrec_recipe [--steps 4] [--batch-size 8]

For each configuration: tokens/s (user + item tower tokens, forward + backward + AdamW step) and
labelled items/s, the unit the generation loss learns from (nig_targets='all' labels every item of
a window; 'last' one per prompt). bf16 autocast where the CPU has it natively. The first step warms
up and is not counted.
"""
from __future__ import annotations

import argparse
import copy

import torch

from bench.perf.calrec import timed_training
from bench.precision import native_bf16
from bench.execute.runner import get_split
from bench.suites.load import DatasetEntry
from calrec.backbone import BUNDLED, freeze_below, load_backbone
from calrec.text import PromptBuilder
from calrec.towers import LossWeights, calrec_loss
from calrec.train import StageConfig

# (label, template, nig_targets, vocab, train_layers)
CONFIGS = [
    ("paper template, target only, full vocab, all layers", "paper", "last", "full", 0),
    ("compact, every item, full vocab, all layers", "compact", "all", "full", 0),
    ("compact, every item, catalog vocab, all layers", "compact", "all", "catalog", 0),
    ("compact, every item, full vocab, top 8 layers", "compact", "all", "full", 8),
    ("compact, every item, catalog vocab, top 8 layers", "compact", "all", "catalog", 8),
    ("compact, every item, item trie, top 8 layers (recipe)", "compact", "all", "trie", 8),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    split = get_split(DatasetEntry("ml-100k", "ml-100k", {}))
    base, tok = load_backbone(BUNDLED)
    bf16 = native_bf16()
    print(f"SmolLM2-135M on ML-100k windows of 20 history items, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, bf16 {'on' if bf16 else 'off (not native here)'}")
    for label, template, nig, vocab, layers in CONFIGS:
        model = copy.deepcopy(base)
        if layers:
            freeze_below(model, layers)
        builder = PromptBuilder(tok, split.item_text, "movie", 20, 48, 768, template,
                                ["Title", "Year"] if template == "compact" else None)
        cfg = StageConfig(args.steps, args.batch_size, examples="epochs", nig_targets=nig, vocab=vocab,
                          target="random")
        weights = LossWeights(user_pooling="next")
        tps, ips = timed_training(model, split, builder, cfg, bf16,
                                  lambda b: (calrec_loss(model, None, b, weights)[0], b.n_tokens))
        print(f"{label:56s} {tps:7.0f} tokens/s {ips:7.1f} labelled items/s", flush=True)


if __name__ == "__main__":
    main()

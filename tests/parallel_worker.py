"""Run by tests/test_parallel.py, alone or under torchrun: CALRec training stages on the tiny model,
one per `name:micro_batch:contrastive_batch` argument; every rank saves its first step's gradient and
loss parts, and its weights and curve after three steps.

    python tests/parallel_worker.py OUT a:0:0 c:4:4
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/parallel_worker.py OUT b:0:0
"""
import sys
from pathlib import Path

import numpy as np
import torch

from bench.datasets import load_dataset
from bench.execute.distributed import init_from_env, world
from bench.split import leave_one_out
from calrec.backbone import tiny_llama, tiny_tokenizer
from calrec.parallel import sum_across_ranks
from calrec.text import PromptBuilder
from calrec.towers import LossWeights
from calrec.train import Domain, Examples, StageConfig, step_gradients, steps, train_stage


def stage(micro: int, contrastive: int) -> dict:
    """The first step's gradient, then the weights and curve after three AdamW steps."""
    split = leave_one_out(load_dataset("synthetic", n_users=80, n_items=40, seed=2))
    tok = tiny_tokenizer([" ".join(a.values()) for a in split.item_text])
    cfg = StageConfig(steps=3, batch_size=8, lr=3e-3, warmup=1, bf16=False, nig_targets="all", examples="epochs",
                      micro_batch=micro, contrastive_batch=contrastive)
    domain, weights = Domain("syn", split, PromptBuilder(tok, split.item_text), 0), LossWeights(logq=True, user_pooling="next")

    def fresh():
        torch.manual_seed(0)
        model, head = tiny_llama(len(tok), seed=0), torch.nn.Linear(32, 32)
        return model.train(), head, [*model.parameters(), *head.parameters()]

    model, head, params = fresh()
    rng = np.random.default_rng(0)
    s, rows = next(steps([Examples(domain, cfg, rng)], np.ones(1), cfg, rng))
    parts = step_gradients(model, head, s, rows, cfg, weights, tok.pad_token_id, params)
    names = [f"model.{n}" for n, _ in model.named_parameters()] + [f"head.{n}" for n, _ in head.named_parameters()]
    grads = {n: p.grad.clone() for n, p in zip(names, params)}
    model, head, params = fresh()
    curves: list[dict] = []
    train_stage(model, head, [domain], np.ones(1), cfg, weights, np.random.default_rng(0), tok.pad_token_id, None, curves, "s")
    state = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **{f"head.{k}": v for k, v in head.state_dict().items()}}
    step = sum_across_ranks(torch.stack(list(parts.values()))).tolist()  # the step's losses, every rank's share summed
    return {"grads": grads, "parts": dict(zip(parts, step)), "state": state, "curves": curves}


def main() -> None:
    init_from_env()
    out = Path(sys.argv[1])
    for arg in sys.argv[2:]:
        name, micro, contrastive = arg.split(":")
        rank, size = world()
        torch.save({**stage(int(micro), int(contrastive)), "world": size}, out / f"{name}.rank{rank}.pt")


if __name__ == "__main__":
    main()

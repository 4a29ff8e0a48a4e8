"""CALRec speed on this machine with the bundled SmolLM2-135M and real ML-100k prompts.

    python -m bench.perf.calrec [--steps 3] [--users 8] [--max-history 20] [--bf16-rows]

Training tokens/s (user + item tower tokens, forward + backward + AdamW step):
  plain   fp32, full LM logits over the whole sequence (HF `labels=` path), NIG loss only
  ours    logits only at target positions, length-bucketed batches, all three losses; full
          finetuning and LoRA; bf16 autocast only where the CPU has native bf16 (--bf16-rows: both)
Inference users/s with N samples + quasi-round-robin BM25:
  plain   HF `generate` in fp32 with num_return_sequences=N (prefill repeated per sample)
  ours    one prefill per user shared by its N samples, the prompt's K/V kept once per user (not
          N times), finished samples leave the batch, batched users (bf16 weights only where native)
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from bench.runner import get_split
from bench.suites import DatasetEntry
from bench.text import BM25Catalog
from bench.precision import autocast, native_bf16
from calrec.backbone import BUNDLED, add_lora, load_backbone
from calrec.generate import sample
from calrec.retrieve import group_generations, quasi_round_robin
from calrec.text import PromptBuilder
from calrec.towers import LossWeights, calrec_loss
from calrec.train import Domain, Examples, StageConfig, batches


def timed_training(model, split, builder, cfg: StageConfig, bf16: bool, step_loss) -> tuple[float, float]:
    """cfg.steps timed training steps on ML-100k batches (one warm-up step before, not counted):
    tokens/s and labelled items/s. `step_loss(batch)` returns (loss, tokens the step processed)."""
    rng = np.random.default_rng(0)
    data = batches([Examples(Domain("ml-100k", split, builder, 0), cfg, rng)], np.ones(1), cfg, rng, builder.eos)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    tokens, items, seconds = 0, 0, 0.0
    for step in range(cfg.steps + 1):
        b = next(data)
        t = time.perf_counter()
        with autocast(bf16):
            loss, n_tokens = step_loss(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:
            seconds += time.perf_counter() - t
            tokens += n_tokens
            items += int(((b.user_ids == builder.end[-1]) & b.label_span).sum())  # each labelled item ends once
    return tokens / seconds, items / seconds


def train_speed(model, split, builder, steps: int, batch_size: int, plain: bool, bf16: bool) -> float:
    weights = LossWeights()

    def step_loss(b):
        if plain:  # fp32 path of HF: full logits over the whole sequence, NIG only
            labels = torch.where(b.target_span, b.user_ids, -100)
            return model(input_ids=b.user_ids, attention_mask=b.user_mask, labels=labels).loss, int(b.user_mask.sum())
        return calrec_loss(model, None, b, weights)[0], b.n_tokens

    return timed_training(model, split, builder, StageConfig(steps, batch_size), bf16, step_loss)[0]


def infer_speed(model, tok, builder, catalog, histories, n: int, plain: bool, user_batch: int) -> tuple[float, float]:
    stop = {tok.eos_token_id, *builder.newline}
    prompts = [builder.user_prompt(h).ids for h in histories]
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    new_tokens = 0
    for s in range(0, len(prompts), user_batch):
        chunk = prompts[s : s + user_batch]
        if plain:
            outs = []
            for p in chunk:
                ids = torch.tensor([p])
                gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7, top_k=0,
                                     num_return_sequences=n, max_new_tokens=40, eos_token_id=sorted(stop),
                                     pad_token_id=tok.pad_token_id)
                outs.append([tok.decode(x[len(p):], skip_special_tokens=True) for x in gen])
                new_tokens += int((gen[:, len(p):] != tok.pad_token_id).sum())
            texts = outs
            lps = [[0.0] * n for _ in outs]
        else:
            samples = sample(model, chunk, n, 0.7, 40, stop, tok.pad_token_id, g)
            texts = [[tok.decode(x.tokens, skip_special_tokens=True) for x in u] for u in samples]
            lps = [[x.logprob for x in u] for u in samples]
            new_tokens += sum(len(x.tokens) for u in samples for x in u)
        for k, (tx, lp) in enumerate(zip(texts, lps)):
            quasi_round_robin(group_generations(tx, lp), catalog, 100, set(histories[s + k].tolist()))
    seconds = time.perf_counter() - t
    return len(prompts) / seconds, new_tokens / len(prompts) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--max-history", type=int, default=20)
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--user-batches", default="8,16", help="users per generation batch to measure")
    ap.add_argument("--bf16-rows", action="store_true", help="measure fp32 and bf16 (default: the auto choice only)")
    args = ap.parse_args()
    torch.manual_seed(0)
    split = get_split(DatasetEntry("ml-100k", "ml-100k", {}))
    model, tok = load_backbone(BUNDLED)
    builder = PromptBuilder(tok, split.item_text, "movie", max_history=args.max_history)
    users = np.arange(args.users)
    histories = split.inputs("test", users)
    plen = np.mean([len(builder.user_prompt(h).ids) for h in histories])
    catalog = BM25Catalog(split.item_text)
    print(f"SmolLM2-135M, ML-100k prompts of {plen:.0f} tokens on average (history {args.max_history}), "
          f"{torch.get_num_threads()} threads")

    print(f"native bf16 on this CPU: {native_bf16()}", flush=True)

    def show(name, value, unit, extra=""):
        print(f"{name:44s} {value:8.2f} {unit}{extra}", flush=True)

    precisions = [False, True] if args.bf16_rows else [native_bf16()]
    if not args.skip_plain and not args.skip_train:
        show("train  plain fp32, full logits, NIG only", train_speed(copy.deepcopy(model), split, builder, args.steps, args.batch_size, True, False), "tokens/s")
    for bf16 in precisions if not args.skip_train else []:
        p = "bf16" if bf16 else "fp32"
        show(f"train  ours {p}, full finetune, 3 losses", train_speed(copy.deepcopy(model), split, builder, args.steps, args.batch_size, False, bf16), "tokens/s")
        show(f"train  ours {p}, LoRA r16, 3 losses", train_speed(add_lora(copy.deepcopy(model), 16, 32), split, builder, args.steps, args.batch_size, False, bf16), "tokens/s")
    model.eval()
    if not args.skip_plain:
        ups, ntok = infer_speed(model, tok, builder, catalog, histories[:4], args.samples, True, 1)
        show("infer  plain HF generate fp32", ups, "users/s", f"  (N={args.samples}, {ntok:.1f} new tokens/sample)")
    for bf16 in precisions:
        m = copy.deepcopy(model).to(torch.bfloat16).eval() if bf16 else model
        for ub in [int(x) for x in args.user_batches.split(",")]:
            ups, ntok = infer_speed(m, tok, builder, catalog, histories, args.samples, False, ub)
            show(f"infer  ours {'bf16' if bf16 else 'fp32'} shared prefill, {ub} user(s)/batch", ups, "users/s",
                 f"  (N={args.samples}, {ntok:.1f} new tokens/sample)")


if __name__ == "__main__":
    main()

"""CALRec speed on this machine with the bundled SmolLM2-135M and real ML-100k prompts.

    python -m bench.perf.calrec [--steps 3] [--users 8] [--max-history 20] [--bf16-rows]
    python -m bench.perf.calrec --mfu [--device cuda] [--batches 16,64,128] [--steps 20] [--pack 2048] [--compile]

--mfu: the training path as `calrec.train` runs it (step_gradients, clipping, AdamW), for the
current settings and each speed switch, with model FLOP utilisation against this device's measured
GEMM peak (a square matmul in the training dtype). Model FLOPs per token follow PaLM (Chowdhery et
al., 2022, appendix B): 6 x non-embedding parameters + 12 x layers x width x sequence length, plus
6 x width x vocabulary for each token the LM head scores (our loss scores only labelled tokens).
Rows: current (batch B in one pass, the losses read every step, AdamW foreach); + no per-step
sync (log_every 50) and fused AdamW; + larger forward batches with the in-batch negatives kept at B
(`contrastive_batch`); with --pack L, each batch again with both towers' texts packed into rows of L
tokens (calrec/packed.py: no padding, one forward pass; model FLOPs counted per text, as above);
with --compile, the last row again with every decoder layer compiled (`compile: true`; its first
three steps, compilation included, are not counted).

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

from bench.execute.runner import get_split
from bench.suites.load import DatasetEntry
from bench.text import BM25Catalog
from bench.precision import autocast, native_bf16, resolve_device
from calrec.backbone import BUNDLED, add_lora, compile_layers, load_backbone
from calrec.generate import sample
from calrec.retrieve import group_generations, quasi_round_robin
from calrec.text import PromptBuilder
from calrec.towers import LossWeights, calrec_loss
from calrec.train import Domain, Examples, StageConfig, batches, step_gradients, steps


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
                ids = torch.tensor([p], device=model.device)
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


def gemm_peak(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` n x n matmuls: the peak this device reaches on this dtype."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(model, rows: list, n_labels: int) -> float:
    """Model FLOPs of one training step (forward + backward) over `rows` (PaLM's count, above)."""
    c = model.config
    width, layers = c.hidden_size, c.num_hidden_layers
    dense = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    flops = 0.0
    for prompt, item, *_ in rows:  # user tower (prompt) and item tower (item text alone)
        for length in (len(prompt.ids), len(item)):
            flops += length * (6 * dense + 12 * layers * width * length)
    return flops + n_labels * 6 * width * c.vocab_size


def mfu_rows(model, split, builder, device: str, bf16: bool, batches_: list[int], steps_: int, peak: float,
             pack_length: int = 0, compile_: bool = False) -> None:
    """Training tokens/s and MFU for the current path and each speed switch (see the docstring)."""
    from calrec.towers import labelled_tokens

    weights = LossWeights(user_pooling="next")
    base = copy.deepcopy(model).cpu()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    b0 = batches_[0]
    configs = [(f"current: batch {b0}, one pass, losses read every step", b0, 0, False, 1, 0, False)]
    configs.append(("+ fused AdamW, losses read every 50 steps", b0, 0, True, 50, 0, False))
    configs += [(f"+ batch {b} in one pass, negatives in groups of {b0}", b, b0, True, 50, 0, False) for b in batches_[1:]]
    if pack_length:
        configs += [(f"+ packed rows of {pack_length} tokens, batch {b}", b, b0 if b != b0 else 0, True, 50, pack_length,
                     False) for b in batches_]
    if compile_:
        configs.append(("+ compiled layers: " + configs[-1][0].removeprefix("+ "), *configs[-1][1:-1], True))
    for label, batch, group, fused, log_every, pack, compiled in configs:
        m = copy.deepcopy(base).to(device).train()
        params = [p for p in m.parameters() if p.requires_grad]
        if compiled:
            compile_layers(m)
        cfg = StageConfig(steps_, batch, contrastive_batch=group, fused=fused, log_every=log_every, bf16=bf16,
                          device=device, examples="epochs", nig_targets="all", pack=pack)
        opt = torch.optim.AdamW(params, lr=1e-5, fused=fused or None)
        rng = np.random.default_rng(0)
        data = steps([Examples(Domain("ml-100k", split, builder, 0), cfg, rng)], np.ones(1), cfg, rng)
        tokens = flops = 0.0
        warm = 3 if compiled else 1
        for step in range(steps_ + warm):
            if step == warm:  # warm-up steps (allocator, kernels, compilation) are not counted
                sync()
                t = time.perf_counter()
            s, rows = next(data)
            parts = step_gradients(m, None, s, rows, cfg, weights, builder.eos, params)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % log_every == 0:
                float(parts["total"])  # what reading the curve costs: a host sync
            if step >= warm:
                tokens += sum(len(e[0].ids) + len(e[1]) for e in rows)
                flops += step_flops(m, rows, sum(labelled_tokens(e[0], "all") for e in rows))
        sync()
        seconds = time.perf_counter() - t
        print(f"train  {label:58s} {tokens / seconds:9.0f} tokens/s  MFU {100 * flops / seconds / peak:5.1f}%", flush=True)
        del m, opt


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
    ap.add_argument("--mfu", action="store_true", help="training tokens/s and model FLOP utilisation per speed switch")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (--mfu and inference rows; other training rows: CPU)")
    ap.add_argument("--batches", default="8,32", help="--mfu: the current batch, then larger forward batches")
    ap.add_argument("--peak-size", type=int, default=0, help="--mfu: matmul size for the GEMM peak (0: 8192 GPU, 2048 CPU)")
    ap.add_argument("--pack", type=int, default=0, help="--mfu: also each batch packed into rows of this many tokens")
    ap.add_argument("--compile", action="store_true", help="--mfu: the last row again with compiled decoder layers")
    args = ap.parse_args()
    torch.manual_seed(0)
    split = get_split(DatasetEntry("ml-100k", "ml-100k", {}))
    model, tok = load_backbone(BUNDLED)
    builder = PromptBuilder(tok, split.item_text, "movie", max_history=args.max_history)
    if args.mfu:
        device = resolve_device(args.device)
        bf16 = native_bf16(device)
        n = args.peak_size or (8192 if device.startswith("cuda") else 2048)
        peak = gemm_peak(device, torch.bfloat16 if bf16 else torch.float32, n)
        name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
        print(f"{name}: GEMM peak {peak / 1e12:.2f} TFLOP/s ({'bf16' if bf16 else 'fp32'}, {n}x{n}); "
              f"paper template, every item labelled, history {args.max_history}")
        mfu_rows(model, split, builder, device, bf16, [int(b) for b in args.batches.split(",")], args.steps, peak, args.pack,
                 args.compile)
        return
    users = np.arange(args.users)
    histories = split.inputs("test", users)
    plen = np.mean([len(builder.user_prompt(h).ids) for h in histories])
    catalog = BM25Catalog(split.item_text)
    print(f"SmolLM2-135M, ML-100k prompts of {plen:.0f} tokens on average (history {args.max_history}), "
          f"{torch.get_num_threads()} threads")

    print(f"native bf16 on this CPU: {native_bf16()}", flush=True)

    def show(name, value, unit, extra=""):
        print(f"{name:44s} {value:8.2f} {unit}{extra}", flush=True)

    precisions = [False, True] if args.bf16_rows else [native_bf16(resolve_device(args.device))]
    if not args.skip_plain and not args.skip_train:
        show("train  plain fp32, full logits, NIG only", train_speed(copy.deepcopy(model), split, builder, args.steps, args.batch_size, True, False), "tokens/s")
    for bf16 in precisions if not args.skip_train else []:
        p = "bf16" if bf16 else "fp32"
        show(f"train  ours {p}, full finetune, 3 losses", train_speed(copy.deepcopy(model), split, builder, args.steps, args.batch_size, False, bf16), "tokens/s")
        show(f"train  ours {p}, LoRA r16, 3 losses", train_speed(add_lora(copy.deepcopy(model), 16, 32), split, builder, args.steps, args.batch_size, False, bf16), "tokens/s")
    device = resolve_device(args.device)
    model.to(device).eval()
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

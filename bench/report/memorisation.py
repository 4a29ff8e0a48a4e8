"""A memorisation control for LLM rows: how much of a dataset's catalog the
untuned backbone already knows. Di Palma et al. (SIGIR 2025) found that large LLMs have memorised
much of MovieLens-1M and that recommendation quality tracks it.

For every catalog item with a title of two or more tokens, after the prompt "<Noun> title:":
  completed   greedy decoding from the title's first half (rounded up) reproduces the rest exactly
              (full vocabulary, no trie: the trie would complete any title whose prefix is unique)
  NLL         -log p(title | prompt), summed over the title's tokens (nats per item)
Measured once per (backbone, dataset version) by `python -m bench memorise --suite S` and stored
under results/memorisation/, whence the tables of suites with LLM rows read it.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np

from bench.execute.provenance import machine
from bench.execute.runner import get_split, git_commit
from bench.execute.store import atomic_write_text
from bench.suites.load import Suite

PROMPT = "{noun} title:"


def llm_backbones(suite: Suite) -> list[str]:
    """The backbones of the suite's LLM rows (CALRec variants), in order."""
    from calrec.config import TrainConfig

    found = []
    for v in suite.variants:
        if v.model == "calrec":
            name = v.params.get("backbone", TrainConfig.backbone)
            if name not in found:
                found.append(name)
    return found


def stored_path(root: Path, backbone: str, dataset: str) -> Path:
    return Path(root) / "memorisation" / re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone) / f"{dataset}.json"


def measure(model, tok, titles: list[str], noun: str, batch: int = 64) -> dict:
    import torch

    with torch.no_grad():
        return _measure(model, tok, titles, noun, batch, torch)


def _measure(model, tok, titles: list[str], noun: str, batch: int, torch) -> dict:
    from tqdm.auto import tqdm

    prompt = tok(PROMPT.format(noun=noun.capitalize()), add_special_tokens=False)["input_ids"]
    ids = [tok(" " + t, add_special_tokens=False)["input_ids"] for t in titles]
    usable = [k for k, x in enumerate(ids) if len(x) >= 2]
    pad = tok.pad_token_id
    completed, nll = [], []
    model.eval()
    for s in tqdm(range(0, len(usable), batch), desc="memorisation", leave=False, unit="batch"):
        rows = [ids[k] for k in usable[s : s + batch]]
        # NLL of the whole title after the prompt (right-padded, one forward)
        seqs = [prompt + r for r in rows]
        width = max(map(len, seqs))
        x = torch.full((len(seqs), width), pad, dtype=torch.long)
        m = torch.zeros_like(x)
        for i, q in enumerate(seqs):
            x[i, : len(q)], m[i, : len(q)] = torch.tensor(q), 1
        logp = torch.log_softmax(model(input_ids=x, attention_mask=m).logits.float(), dim=-1)
        for i, r in enumerate(rows):
            at = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(r))
            nll.append(-float(logp[i, at, torch.tensor(r)].sum()))
        # greedy completion of each title's second half (left-padded prompts)
        heads = [prompt + r[: math.ceil(len(r) / 2)] for r in rows]
        rests = [r[math.ceil(len(r) / 2):] for r in rows]
        width = max(map(len, heads))
        x = torch.full((len(heads), width), pad, dtype=torch.long)
        m = torch.zeros_like(x)
        for i, q in enumerate(heads):
            x[i, width - len(q):], m[i, width - len(q):] = torch.tensor(q), 1
        out = model.generate(input_ids=x, attention_mask=m, max_new_tokens=max(map(len, rests)), do_sample=False,
                             pad_token_id=pad)[:, width:]
        completed += [out[i, : len(rest)].tolist() == rest for i, rest in enumerate(rests)]
    return {"items": len(titles), "measured": len(usable), "completed": int(sum(completed)),
            "completed_share": round(float(np.mean(completed)), 4) if completed else None,
            "mean_title_nll": round(float(np.mean(nll)), 4) if nll else None,
            "mean_title_tokens": round(float(np.mean([len(ids[k]) for k in usable])), 2) if usable else None}


def memorise(suite: Suite, root: Path) -> list[Path]:
    """Measure every (LLM backbone, dataset) of the suite not yet stored for its data version."""
    from calrec.backbone import load_backbone
    from calrec.text import domain_noun

    written = []
    for backbone in llm_backbones(suite):
        for d in suite.datasets:
            split = get_split(d)
            path = stored_path(root, backbone, d.key)
            have = _read(path)
            if have is not None and have["data_version"] == split.version:
                continue
            if path.is_file() and have is None:
                print(f"{path}: not a whole memorisation record (damaged); measured again")
            titles = [a.get("Title") or next(iter(a.values()), "") for a in split.item_text]
            model, tok = load_backbone(backbone, titles)
            t0 = time.perf_counter()
            got = measure(model, tok, titles, domain_noun(split.dataset))
            record = {"backbone": backbone, "dataset": d.key, "data_version": split.version,
                      "prompt": PROMPT, **got, "seconds": round(time.perf_counter() - t0, 1),
                      "command": f"python -m bench memorise --suite {suite.name}", "commit": git_commit(),
                      "machine": machine()}
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            written.append(path)
    return written


NUMBERS = ("measured", "completed", "completed_share", "mean_title_nll", "mean_title_tokens")


def _read(path: Path) -> dict | None:
    """The stored record, or None where there is none or it is not whole (a damaged file is never shown)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    whole = isinstance(record, dict) and isinstance(record.get("data_version"), str) and all(
        isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool) for k in NUMBERS)
    return record if whole else None


def stored(root: Path, backbone: str, dataset: str) -> dict | None:
    return _read(stored_path(root, backbone, dataset))


def memorisation_note(suite: Suite, root: Path, dataset: str) -> str | None:
    """The sentence the notes of a table with LLM rows carry, or None without LLM rows."""
    backbones = llm_backbones(suite)
    if not backbones:
        return None
    parts = []
    for b in backbones:
        r = stored(root, b, dataset)
        parts.append(f"{b}: not measured (python -m bench memorise --suite {suite.name})" if r is None else
                     f"{b} completes {r['completed']} of {r['measured']} titles exactly from their first half "
                     f"({r['completed_share']:.1%}), mean NLL {r['mean_title_nll']:.2f} nats per title")
    return "Memorisation control, the untuned LLM on this catalog (bench/report/memorisation.py): " + "; ".join(parts) + "."


def memorisation_markdown(suite: Suite, root: Path, dataset: str) -> str | None:
    from tabulate import tabulate

    rows = [(b, stored(root, b, dataset)) for b in llm_backbones(suite)]
    rows = [(b, r) for b, r in rows if r is not None]
    if not rows:
        return None
    body = [[b, r["measured"], r["completed"], f"{r['completed_share']:.4f}", f"{r['mean_title_nll']:.3f}",
             f"{r['mean_title_tokens']:.2f}"] for b, r in rows]
    table = tabulate(body, headers=["Backbone", "Titles", "Completed", "Share", "NLL per title (nats)", "Tokens per title"],
                     tablefmt="pipe", disable_numparse=True)
    return (f"### {suite.name}: {dataset}, memorisation control (untuned backbones)\n\n{table}\n\n"
            f"- Prompt `{PROMPT}` (noun of the domain), then the title; greedy completion of each title's second half "
            "from its first half (rounded up), full vocabulary; titles of one token are left out. "
            f"Data: {rows[0][1]['data_version']}.\n")

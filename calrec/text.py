"""CALRec's prompts as token ids, with the spans the towers pool over (CALREC_SPEC: Text).

A user prompt is built from pre-tokenised pieces, so item texts are tokenised once per catalog and
the history and target spans are known exactly:

    <user prefix>
    The first <noun> is as follows: <item text>\n
    The next <noun> is as follows: <item text>\n
    ...
    The next <noun> is as follows: | <target item text><eos>      (| = where generation starts)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.text import render_item

DOMAIN_NOUNS = {"ml-100k": "movie", "ml-1m": "movie"}


def domain_noun(dataset: str) -> str:
    return DOMAIN_NOUNS.get(dataset, "item")


@dataclass
class PromptTokens:
    ids: list[int]
    history: tuple[int, int]  # [start, end) of the history items' text in ids
    target: tuple[int, int] | None  # [start, end) of the target item's tokens (with eos), if any


class PromptBuilder:
    """Tokenises a catalog's item texts once and assembles prompts from the cached pieces."""

    def __init__(self, tokenizer, item_text: list[dict[str, str]], noun: str = "item", max_history: int = 20,
                 max_item_tokens: int = 48, max_prompt_tokens: int = 1024):
        self.tok = tokenizer
        self.eos = tokenizer.eos_token_id
        enc = lambda s: tokenizer(s, add_special_tokens=False).input_ids  # noqa: E731
        self.texts = [render_item(a) for a in item_text]
        # Item texts are capped so one long title cannot crowd the history out of the prompt.
        self.items = [enc(t)[:max_item_tokens] for t in self.texts]
        self.prefix = enc(f"Below are the {noun}s a user interacted with, in order; the last one is to be predicted.\n")
        self.first = enc(f"The first {noun} is as follows: ")
        self.next = enc(f"The next {noun} is as follows: ")
        self.newline = enc("\n")
        self.max_history, self.max_prompt_tokens = max_history, max_prompt_tokens

    def item_ids(self, item: int) -> list[int]:
        """Item tower input: the item text alone."""
        return self.items[item]

    def user_prompt(self, history: np.ndarray, target: int | None = None) -> PromptTokens:
        """Most recent `max_history` items, whole items only, dropping the oldest until it fits."""
        hist = list(history[-self.max_history:]) if self.max_history > 0 else []
        tail = len(self.next) + (len(self.items[target]) + 1 if target is not None else 0)
        while True:
            body: list[int] = []
            for k, item in enumerate(hist):
                body += (self.first if k == 0 else self.next) + self.items[item] + self.newline
            if len(self.prefix) + len(body) + tail <= self.max_prompt_tokens or not hist:
                break
            hist = hist[1:]
        ids = self.prefix + body
        history_span = (len(self.prefix), len(ids))
        ids = ids + (self.first if not hist else self.next)
        target_span = None
        if target is not None:
            start = len(ids)
            ids = ids + self.items[target] + [self.eos]
            target_span = (start, len(ids))
        return PromptTokens(ids, history_span, target_span)

"""CALRec's prompts as token ids, with the spans the towers pool over and the losses label
(docs/calrec-spec.md: Text).

A user prompt is built from pre-tokenised pieces, so item texts are tokenised once per catalog and
every span is known exactly. Two templates:

  paper    <user prefix>
           The first <noun> is as follows: <Title: ..., Year: ..., Genres: ...>\n
           The next <noun> is as follows: <item text>\n
           ...
           The next <noun> is as follows: | <target item text><eos>     (| = where generation starts)

  compact  <noun>s watched, oldest first:\n
           Toy Story (1995)\n
           ...
           | <target item text>\n

With `natural_titles`, MovieLens' inverted articles are restored ("Usual Suspects, The" -> "The Usual
Suspects") and each compact line opens with a space, so a title's first word is the word token a
BPE tokenizer learnt in running text (" Toy") instead of a sub-word split after a newline ("T",
"oy"): fewer items share a first token, and the model reads titles in their pretraining form.

`compact` spends ~4x fewer tokens per item (no item prefix, no field names), so a CPU trains on
~4x more items per minute; its item text ends at the newline, which is also where sampling stops.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from bench.text import render_compact, render_item
from calrec.trie import CatalogTrie

DOMAIN_NOUNS = {"ml-100k": "movie", "ml-1m": "movie"}
TEMPLATES = ("paper", "compact")


def domain_noun(dataset: str) -> str:
    return DOMAIN_NOUNS.get(dataset, "item")


# Articles MovieLens moves to a title's end ("Postino, Il"), English and the languages of its foreign titles.
_INVERTED = re.compile(r"(.+), (The|A|An|L'|La|Le|Les|Il|El|Los|Las|Lo|Das|Der|Die|Det|Den|Un|Une)")


def natural_title(title: str) -> str:
    """"Usual Suspects, The" -> "The Usual Suspects"; an alternate title in parentheses is restored
    too ("Blue Angel, The (Blaue Engel, Der)" -> "The Blue Angel (Der Blaue Engel)")."""
    def restore(part: str) -> str:
        m = _INVERTED.fullmatch(part)
        if m is None:
            return part
        return m[2] + m[1] if m[2].endswith("'") else f"{m[2]} {m[1]}"

    if title.endswith(")") and " (" in title:
        main, alt = title[:-1].split(" (", 1)
        return f"{restore(main)} ({restore(alt)})"
    return restore(title)


@dataclass
class PromptTokens:
    ids: list[int]
    history: tuple[int, int]  # [start, end) of the history items' text in ids (prefixes included)
    target: tuple[int, int] | None  # [start, end) of the target item's tokens (with its end token), if any
    items: list[tuple[int, int]] = field(default_factory=list)  # per history item: its text + end token
    item_ids: list[int] = field(default_factory=list)  # the history items in the prompt, then the target if any

    @property
    def next_pos(self) -> int:
        """The position whose state predicts the next item's first token (the last prompt token)."""
        return (self.target[0] if self.target else len(self.ids)) - 1


class PromptBuilder:
    """Tokenises a catalog's item texts once and assembles prompts from the cached pieces."""

    def __init__(self, tokenizer, item_text: list[dict[str, str]], noun: str = "item", max_history: int = 20,
                 max_item_tokens: int = 48, max_prompt_tokens: int = 1024, template: str = "paper",
                 item_fields: list[str] | None = None, natural_titles: bool = False):
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, not {template!r}")
        self.tok, self.template = tokenizer, template
        enc = lambda s: tokenizer(s, add_special_tokens=False).input_ids  # noqa: E731
        if natural_titles:
            item_text = [{k: natural_title(v) if k == "Title" else v for k, v in a.items()} for a in item_text]
        if template == "paper":
            self.texts = [render_item({k: a[k] for k in (item_fields or a)}) for a in item_text]
            self.prefix = enc(f"Below are the {noun}s a user interacted with, in order; the last one is to be predicted.\n")
            self.first = enc(f"The first {noun} is as follows: ")
            self.next = enc(f"The next {noun} is as follows: ")
        else:
            self.texts = [(" " if natural_titles else "") + render_compact(a, item_fields) for a in item_text]
            self.prefix = enc(f"{noun.capitalize()}s watched, oldest first:\n" if noun == "movie"
                              else f"{noun.capitalize()}s bought, oldest first:\n")
            self.first = self.next = []
        self.newline = enc("\n")
        # How a generated item ends: eos after the paper's target, the newline in `compact`.
        self.end = [tokenizer.eos_token_id] if template == "paper" else self.newline
        self.stop = {tokenizer.eos_token_id, *self.newline}
        # Item texts are capped so one long title cannot crowd the history out of the prompt.
        self.items = [enc(t)[:max_item_tokens] for t in self.texts]
        self.max_history, self.max_prompt_tokens = max_history, max_prompt_tokens
        # Every token an item text or its end is spelled with (vocab='catalog' restricts the LM head to these).
        self.vocab = sorted({t for ids in self.items for t in ids} | set(self.end) | self.stop)
        self._trie = None

    @property
    def trie(self) -> CatalogTrie:
        """Prefix tree of every item's continuation (vocab='trie': constrained to catalog items)."""
        if self._trie is None:
            self._trie = CatalogTrie([self.continuation(i) for i in range(len(self.items))])
        return self._trie

    @property
    def eos(self) -> int:
        return self.tok.eos_token_id

    def item_ids(self, item: int) -> list[int]:
        """Item tower input: the item text alone."""
        return self.items[item]

    def continuation(self, item: int) -> list[int]:
        """The tokens a prompt is completed with for `item`: its text and the token that ends it."""
        return self.items[item] + self.end

    def user_prompt(self, history: np.ndarray, target: int | None = None) -> PromptTokens:
        """Most recent `max_history` items, whole items only, dropping the oldest until it fits."""
        hist = list(history[-self.max_history:]) if self.max_history > 0 else []
        tail = len(self.next) + (len(self.continuation(target)) if target is not None else 0)
        while True:
            size = len(self.prefix) + tail + sum(len(self.next) + len(self.items[i]) + len(self.newline) for i in hist)
            size += len(self.first) - len(self.next) if hist else 0
            if size <= self.max_prompt_tokens or not hist:
                break
            hist = hist[1:]
        ids, spans = list(self.prefix), []
        for k, item in enumerate(hist):
            ids += self.first if k == 0 else self.next
            spans.append((len(ids), len(ids) + len(self.items[item]) + len(self.newline)))
            ids += self.items[item] + self.newline
        history_span = (len(self.prefix), len(ids))
        ids += self.first if not hist else self.next
        target_span = None
        if target is not None:
            start = len(ids)
            ids += self.continuation(target)
            target_span = (start, len(ids))
        return PromptTokens(ids, history_span, target_span, spans, [int(i) for i in hist] + ([int(target)] if target is not None else []))

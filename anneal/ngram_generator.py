"""A word-level n-gram language model as an offline stand-in for an LLM generator.

Fitted on seed documents of the domain, it writes text with the domain's vocabulary and
local phrasing but little global coherence and no knowledge beyond its seeds: cheap,
on-topic, and far less diverse than real curated text — the profile of synthetic data
that helps at small budgets and is overtaken by real data at large ones. Generation is
deterministic in ``(seed, index)`` so pools bought with more spend extend smaller ones.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass

_TOKEN = re.compile(r"\n\n|\n|[^\s]+")
_START = "<s>"


@dataclass(frozen=True)
class NgramModel:
    """Next-word candidates per context of ``order - 1`` words."""

    order: int
    table: dict[tuple[str, ...], tuple[list[str], list[int]]]


def fit_ngram(texts: list[str], order: int = 3) -> NgramModel:
    """Count word n-grams of ``texts`` (newlines kept as words, so layout survives)."""
    if order < 2:
        raise ValueError(f"order must be at least 2, got {order}")
    counts: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for text in texts:
        words = [_START] * (order - 1) + _TOKEN.findall(text) + [_START]
        for i in range(order - 1, len(words)):
            counts[tuple(words[i - order + 1 : i])][words[i]] += 1
    table = {
        context: (sorted(nexts), [nexts[w] for w in sorted(nexts)])
        for context, nexts in sorted(counts.items())
    }
    return NgramModel(order=order, table=table)


def generate(model: NgramModel, seed: int, index: int, *, max_words: int = 400) -> str:
    """Document ``index`` of generator ``seed``: a sample until the end marker or cap."""
    rng = random.Random(f"ngram-{seed}-{index}")
    context = (_START,) * (model.order - 1)
    words: list[str] = []
    for _ in range(max_words):
        choices = model.table.get(context)
        if choices is None:
            break
        word = rng.choices(choices[0], weights=choices[1])[0]
        if word == _START:
            break
        words.append(word)
        context = (*context[1:], word)
    return _detokenize(words)


def _detokenize(words: list[str]) -> str:
    out: list[str] = []
    for word in words:
        if word.startswith("\n") or not out or out[-1].endswith("\n"):
            out.append(word)
        else:
            out.append(" " + word)
    return "".join(out).strip()

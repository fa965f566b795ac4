"""The n-gram generator: deterministic per (seed, index), and it only recombines its seeds."""

from __future__ import annotations

import re

import pytest

from annealscale.anneal.ngram_generator import fit_ngram, generate

SEEDS = [
    "Return the determinant of the matrix.\n\nExamples\n========\n\n>>> Matrix([[1, 2], [3, 4]]).det()\n-2",
    "Compute the derivative of f with respect to x.\n\n>>> diff(x**2, x)\n2*x",
    "Return the greatest common divisor of a and b.\n\n>>> gcd(12, 18)\n6",
] * 3


@pytest.fixture(scope="module")
def model():
    return fit_ngram(SEEDS, order=3)


def test_same_seed_and_index_give_the_same_document(model):
    assert generate(model, 0, 5) == generate(model, 0, 5)
    documents = {generate(model, 0, i) for i in range(40)}
    assert len(documents) > 3  # different indices sample different documents
    assert generate(model, 1, 5) != generate(model, 0, 5) or generate(model, 1, 6) != generate(
        model, 0, 6
    )


def test_generated_words_all_come_from_the_seeds(model):
    vocabulary = {w for text in SEEDS for w in re.findall(r"[^\s]+", text)}
    for i in range(30):
        words = set(re.findall(r"[^\s]+", generate(model, 0, i)))
        assert words <= vocabulary


def test_every_word_pair_was_seen_in_a_seed(model):
    bigrams = set()
    for text in SEEDS:
        words = re.findall(r"\n\n|\n|[^\s]+", text)
        bigrams |= {(a, b) for a, b in zip(words, words[1:], strict=False) if "\n" not in a + b}
    for i in range(30):
        words = re.findall(r"\n\n|\n|[^\s]+", generate(model, 0, i))
        pairs = {(a, b) for a, b in zip(words, words[1:], strict=False) if "\n" not in a + b}
        assert pairs <= bigrams


def test_order_below_two_is_rejected():
    with pytest.raises(ValueError, match="order"):
        fit_ngram(SEEDS, order=1)

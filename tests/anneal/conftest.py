"""Real, tiny inputs for the data tests: a BPE tokenizer trained here and text corpora."""

from __future__ import annotations

import random

import pytest

from annealscale.anneal.synthetic_math import generate_math_document

_WORDS = (
    "the a river house garden letter morning train city window music story friend "
    "walked opened wrote found painted carried remembered quietly slowly beside under "
    "across through before after yellow old small green tall warm evening village "
    "market bread coffee book chair door street rain summer winter song"
).split()


def _english_document(seed: int, index: int) -> str:
    """A few plain English-like sentences with no math in them."""
    rng = random.Random(f"english-{seed}-{index}")
    sentences = []
    for _ in range(rng.randint(3, 6)):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 12))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


@pytest.fixture(scope="session")
def english_document():
    """``english_document(seed, index)``: a deterministic non-math document."""
    return _english_document


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE (300 tokens) trained on math and English text, as the demo does."""
    from annealscale.anneal.base_model import BaseModelConfig, train_tokenizer

    texts = [generate_math_document(100, i) for i in range(150)]
    texts += [_english_document(100, i) for i in range(150)]
    return train_tokenizer(texts, BaseModelConfig(vocab_size=300))


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory):
    """The tokenizer saved with ``save_pretrained``, loadable by path like a checkpoint's."""
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path

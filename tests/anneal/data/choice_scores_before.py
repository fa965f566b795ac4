"""Writes ``choice_scores_before.json``: multiple-choice scores from the scoring path as
it was before tasks went through lm-evaluation-harness (commit 6762c88: `read_questions`,
`encode_questions`, `score_choices`, `choice_metrics`), on a seeded tiny Llama and the
test tokenizer. `tests/anneal/test_harness.py` checks that today's path gives the same.

Run from the repository root: ``python -m tests.anneal.data.choice_scores_before``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_suffix(".json")
MAX_LEN = 24
"""Short enough that the long questions are cut from the left."""


def questions() -> list[dict]:
    """Arithmetic questions on the demo's math domain, with the spacing edge cases the
    encoder handles: a question ending in a space, a choice starting with one, a long
    question cut from the left."""
    rng = random.Random("choice-scores-before")
    items = []
    for i in range(10):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        right = a * b
        wrong = sorted({right + rng.randint(1, 9), right - rng.randint(1, 9), a + b} - {right})
        choices = [str(c) for c in [right, *wrong]]
        rng.shuffle(choices)
        question = f"Compute {a}*{b}. The product is"
        if i == 3:
            question += " "
        if i == 5:
            choices = [" " + c for c in choices]
        if i == 7:
            question = "Let f(x) = x**2 + 3*x. " * 4 + question
        items.append(
            {
                "question": question,
                "choices": choices,
                "answer": choices.index((" " if i == 5 else "") + str(right)),
            }
        )
    return items


def tiny_model(vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
    )


def main() -> None:
    import tempfile

    from annealscale.anneal.base_model import BaseModelConfig, train_tokenizer
    from annealscale.anneal.evaluate import choice_metrics, score_choices
    from annealscale.anneal.synthetic_math import generate_math_document
    from annealscale.anneal.tasks import encode_questions, read_questions
    from tests.anneal.conftest import _english_document

    # the `tokenizer` fixture of tests/anneal/conftest.py
    texts = [generate_math_document(100, i) for i in range(150)]
    texts += [_english_document(100, i) for i in range(150)]
    tokenizer = train_tokenizer(texts, BaseModelConfig(vocab_size=300))
    items = questions()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arith.jsonl"
        path.write_text("".join(json.dumps(q) + "\n" for q in items))
        result = {"max_len": MAX_LEN, "questions": items, "by_max_questions": {}}
        model = tiny_model(len(tokenizer))
        for limit in (None, 6):
            task = encode_questions(read_questions(str(path), limit), tokenizer, MAX_LEN)
            scores = score_choices(model, task, batch_size=4)
            accuracy, logprob = choice_metrics(task, scores)
            result["by_max_questions"][str(limit)] = {
                "accuracy": accuracy,
                "logprob": logprob,
                "pair_scores": scores.tolist(),
            }
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

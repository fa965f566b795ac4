"""Multiple-choice tasks: reading our JSONL and encoding (context, continuation) pairs.

Our JSONL tasks run through lm-evaluation-harness like any other task (`anneal.harness`
adapts them); every pair the harness asks to score, of any task, is encoded here as
``[EOS] + context + continuation`` and scored by `anneal.evaluate.score_choices`. EOS
opens it as packing opens every document, so the model sees a question where it would see
the start of a document; for our tasks the continuation is ``" " + choice``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annealscale.core.errors import AnnealscaleError


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class EncodedTask:
    """Token ids of every (question, choice) pair, flattened.

    ``tokens[offsets[i]:offsets[i + 1]]`` is pair ``i``; its choice tokens start at
    ``offsets[i] + choice_starts[i]``. ``question_of[i]`` is the pair's question and
    ``answers[q]`` the number of question ``q``'s correct choice.
    """

    tokens: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (pairs + 1,) int64
    choice_starts: np.ndarray  # (pairs,) int64, position of the first choice token
    question_of: np.ndarray  # (pairs,) int64
    answers: np.ndarray  # (questions,) int64

    @property
    def pairs(self) -> int:
        return len(self.choice_starts)

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


def read_questions(path: str, max_questions: int | None = None) -> list[Question]:
    """Questions of the JSONL at ``path``, checked line by line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AnnealscaleError(f"eval.tasks: '{path}' is not a file; give a JSONL of questions")
    questions = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise AnnealscaleError(f"{where}: not valid JSON") from None
        if not isinstance(item, dict):
            raise AnnealscaleError(f"{where}: expected an object with question, choices, answer")
        question, choices, answer = item.get("question"), item.get("choices"), item.get("answer")
        if not isinstance(question, str):
            raise AnnealscaleError(f"{where}: question: expected a string")
        if (
            not isinstance(choices, list)
            or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)
        ):
            raise AnnealscaleError(f"{where}: choices: expected a list of two or more strings")
        if (
            isinstance(answer, bool)
            or not isinstance(answer, int)
            or not 0 <= answer < len(choices)
        ):
            raise AnnealscaleError(
                f"{where}: answer: expected an index into choices (0 to {len(choices) - 1})"
            )
        questions.append(Question(question, tuple(choices), answer))
        if max_questions is not None and len(questions) == max_questions:
            break
    if not questions:
        raise AnnealscaleError(f"{path}: no questions")
    return questions


def continuation_text(question: str, choice: str) -> str:
    """The text scored after ``question`` for ``choice``: a space between them unless one
    side already has it."""
    return choice if choice[:1].isspace() or question[-1:].isspace() else " " + choice


def encode_pair(tokenizer, context: str, continuation: str, max_len: int) -> tuple[list[int], int]:
    """``[EOS] + context + continuation`` as token ids, each side encoded on its own, at most
    ``max_len`` tokens (the context is cut from the left when the pair is longer; the
    continuation is kept whole when it fits); returns the ids and where the continuation
    starts. Every scored pair, of our JSONL tasks or of lm-eval's, is encoded here."""
    ids = [tokenizer.eos_token_id, *tokenizer(context, add_special_tokens=False)["input_ids"]]
    scored = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not scored:
        raise AnnealscaleError(f"eval: continuation {continuation!r} encodes to no tokens")
    scored = scored[: max_len - 1]
    keep = max(1, max_len - len(scored))
    sequence = ids[-keep:] + scored
    return sequence, len(sequence) - len(scored)


def encode_pairs(
    pairs: list[tuple[str, str]], tokenizer, max_len: int, question_of=None, answers=()
) -> EncodedTask:
    """`encode_pair` over every (context, continuation) in ``pairs``, flattened."""
    encoded = [encode_pair(tokenizer, c, x, max_len) for c, x in pairs]
    sequences = [s for s, _ in encoded]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    return EncodedTask(
        tokens=np.asarray([t for s in sequences for t in s], dtype=np.int32),
        offsets=offsets,
        choice_starts=np.asarray([start for _, start in encoded], dtype=np.int64),
        question_of=np.asarray(
            range(len(pairs)) if question_of is None else question_of, dtype=np.int64
        ),
        answers=np.asarray(answers, dtype=np.int64),
    )


def encode_questions(questions: list[Question], tokenizer, max_len: int) -> EncodedTask:
    """Encode every (question, choice) pair (`encode_pair`)."""
    pairs, question_of = [], []
    for q, item in enumerate(questions):
        for choice in item.choices:
            pairs.append((item.question, continuation_text(item.question, choice)))
            question_of.append(q)
    return encode_pairs(pairs, tokenizer, max_len, question_of, [q.answer for q in questions])

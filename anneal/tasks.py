"""Multiple-choice tasks: reading the JSONL and encoding every (question, choice) pair.

Encoding happens once, on the driver, with the base model's tokenizer; workers receive
token arrays (``.npz``) and only run forward passes (`anneal.evaluate.score_choices`).
Each pair becomes ``[EOS] + question + " " + choice``: EOS opens it as packing opens every
document, so the model sees a question where it would see the start of a document.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annealscale.core.errors import AnnealscaleError
from annealscale.core.hashing import content_hash


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

    def scored_tokens(self) -> int:
        """Tokens run through the model to score every pair (for eval FLOPs)."""
        return int(self.offsets[-1] - self.pairs)  # each pair predicts all but its first

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, **self.__dict__)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> EncodedTask:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in data.files})


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


def encode_questions(questions: list[Question], tokenizer, max_len: int) -> EncodedTask:
    """Encode every pair, keeping at most ``max_len`` tokens (the question is cut from the
    left when the pair is longer; the choice is always kept whole when it fits)."""
    eos = tokenizer.eos_token_id
    sequences, starts, question_of, answers = [], [], [], []
    for q, item in enumerate(questions):
        context = [eos, *tokenizer(item.question, add_special_tokens=False)["input_ids"]]
        answers.append(item.answer)
        for choice in item.choices:
            text = choice if choice[:1].isspace() or item.question[-1:].isspace() else " " + choice
            continuation = tokenizer(text, add_special_tokens=False)["input_ids"]
            if not continuation:
                raise AnnealscaleError(f"eval.tasks: choice {choice!r} encodes to no tokens")
            continuation = continuation[: max_len - 1]
            keep = max(1, max_len - len(continuation))
            sequence = context[-keep:] + continuation
            sequences.append(sequence)
            starts.append(len(sequence) - len(continuation))
            question_of.append(q)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    return EncodedTask(
        tokens=np.asarray([t for s in sequences for t in s], dtype=np.int32),
        offsets=offsets,
        choice_starts=np.asarray(starts, dtype=np.int64),
        question_of=np.asarray(question_of, dtype=np.int64),
        answers=np.asarray(answers, dtype=np.int64),
    )


def encode_task_file(
    path: str, tokenizer, *, max_len: int, cache_dir: Path, max_questions: int | None, key: str
) -> Path:
    """Encode the task at ``path`` once per tokenizer and length; return the ``.npz``."""
    questions = read_questions(path, max_questions)
    out = Path(cache_dir) / "tasks" / f"{content_hash([key, path, max_questions, max_len])}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    encode_questions(questions, tokenizer, max_len).save(out)
    return out

"""Multiple-choice scoring by the log-likelihood of each choice: against hand-computed
log-probabilities of a bigram model, and batched-with-padding against one pair at a time
on a real Hugging Face model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from annealscale.anneal.evaluate import choice_metrics, score_choices
from annealscale.anneal.tasks import EncodedTask, encode_questions, read_questions
from annealscale.core.errors import AnnealscaleError


class _Bigram:
    """A real torch module whose next-token logits depend only on the current token:
    ``logits[t] = table[token_t]``, so every log-probability is a hand computation."""

    def __new__(cls, table):
        import torch

        class Bigram(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.table = torch.nn.Parameter(torch.as_tensor(table, dtype=torch.float32))

            def forward(self, input_ids):
                from types import SimpleNamespace

                return SimpleNamespace(logits=self.table[input_ids])

        return Bigram()


def _task(sequences, starts, question_of, answers) -> EncodedTask:
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])])
    return EncodedTask(
        tokens=np.asarray([t for s in sequences for t in s], dtype=np.int32),
        offsets=offsets.astype(np.int64),
        choice_starts=np.asarray(starts, dtype=np.int64),
        question_of=np.asarray(question_of, dtype=np.int64),
        answers=np.asarray(answers, dtype=np.int64),
    )


def _log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    return row - math.log(np.exp(row).sum())


def test_scores_match_hand_computed_bigram_log_probabilities():
    table = [[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]
    lp = [_log_softmax(r) for r in table]
    # question 0: context [0, 1]; choices [2] and [0, 2]. question 1: context [2]; choices [1], [2]
    sequences = [[0, 1, 2], [0, 1, 0, 2], [2, 1], [2, 2]]
    task = _task(sequences, starts=[2, 2, 1, 1], question_of=[0, 0, 1, 1], answers=[1, 0])
    expected = [
        lp[1][2],  # P(2 | 1)
        lp[1][0] + lp[0][2],  # P(0 | 1) P(2 | 0)
        lp[2][1],
        lp[2][2],
    ]
    scores = score_choices(_Bigram(table), task, batch_size=3, pad_id=1)
    assert scores == pytest.approx(expected, abs=1e-6)
    # by hand: q0 choice 1 = -0.2395 - 0.4076 beats choice 0 = -2.2395; q1 choice 0 =
    # -0.0949 beats -3.0949; both answers are right
    assert expected == pytest.approx([-2.2395, -0.6471, -0.0949, -3.0949], abs=1e-4)
    accuracy, logprob = choice_metrics(task, scores)
    assert accuracy == 1.0
    assert logprob == pytest.approx((-0.6471 - 0.0949) / 2, abs=1e-4)
    wrong = _task(sequences, starts=[2, 2, 1, 1], question_of=[0, 0, 1, 1], answers=[0, 0])
    assert choice_metrics(wrong, scores) == pytest.approx((0.5, (-2.2395 - 0.0949) / 2), abs=1e-4)


def test_batched_padded_scores_equal_one_pair_at_a_time_on_a_real_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
    )
    questions = read_questions_from_items(
        [
            ("What is two plus two?", ["four", "five apples in a basket", "x"], 0),
            ("The river", ["flows", "walked slowly across the garden"], 1),
            ("Integrate x dx", ["x^2/2 + C", "2x"], 0),
        ]
    )
    task = encode_questions(questions, tokenizer, max_len=64)
    batched = score_choices(model, task, batch_size=4, pad_id=0)
    for i in range(task.pairs):
        torch.set_grad_enabled(False)
        sequence = torch.as_tensor(task.sequence(i)[None].astype(np.int64))
        logprobs = torch.log_softmax(model(input_ids=sequence[:, :-1]).logits.float(), -1)[0]
        start = int(task.choice_starts[i])
        direct = sum(
            float(logprobs[t - 1, sequence[0, t]]) for t in range(start, sequence.shape[1])
        )
        assert batched[i] == pytest.approx(direct, abs=1e-4)
    torch.set_grad_enabled(True)
    assert list(task.question_of) == [0, 0, 0, 1, 1, 2, 2]
    assert task.sequence(0)[0] == tokenizer.eos_token_id


def read_questions_from_items(items):
    from annealscale.anneal.tasks import Question

    return [Question(q, tuple(c), a) for q, c, a in items]


def test_long_questions_are_cut_from_the_left_and_choices_kept(tokenizer):
    from annealscale.anneal.tasks import Question

    long_question = " ".join(["the river"] * 100)
    task = encode_questions([Question(long_question, ("flows", "rests"), 0)], tokenizer, 16)
    for i in range(task.pairs):
        assert len(task.sequence(i)) == 16
    choice = tokenizer(" flows", add_special_tokens=False)["input_ids"]
    assert list(task.sequence(0)[task.choice_starts[0] :]) == choice


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ({"question": "q", "choices": ["a"], "answer": 0}, "choices: expected a list of two"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "answer: expected an index"),
        ({"question": 3, "choices": ["a", "b"], "answer": 0}, "question: expected a string"),
    ],
)
def test_bad_task_lines_name_file_and_line(tmp_path, line, words):
    path = tmp_path / "task.jsonl"
    good = {"question": "q", "choices": ["a", "b"], "answer": 1}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(AnnealscaleError, match=rf"^{path}:2: {words}"):
        read_questions(str(path))
    assert len(read_questions(str(path), max_questions=1)) == 1

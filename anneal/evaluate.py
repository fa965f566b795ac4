"""Held-out bits per byte (the fitted metric) and multiple-choice scores, from per-token
losses computed over chunks of the vocabulary projection (`anneal.loss`)."""

from __future__ import annotations

import math

import numpy as np


def nll_and_bytes(model, windows: np.ndarray, token_bytes: np.ndarray, *, batch_size: int = 16):
    """Summed next-token loss (nats) and the UTF-8 bytes it predicts, over ``windows``.

    ``windows`` is ``(n, seq_len + 1)`` token ids; each row predicts its last ``seq_len``
    tokens. Targets that are special tokens (zero bytes) are excluded from both sums. The
    two sums are returned separately so data-parallel workers can add them before dividing.
    """
    import torch

    from annealscale.anneal.loss import token_nll

    device = next(model.parameters()).device
    token_bytes_t = torch.as_tensor(token_bytes, device=device)
    # summed on the device: one host sync per call, not per batch
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    bytes_sum = torch.zeros((), dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = torch.as_tensor(windows[start : start + batch_size], device=device).long()
            inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T) each
            nll = token_nll(model, inputs, targets).reshape(-1)  # (B*T,), chunked logits
            nbytes = token_bytes_t[targets.reshape(-1)]
            mask = nbytes > 0
            nll_sum += nll[mask].sum()
            bytes_sum += nbytes.sum()
    model.train(was_training)
    return float(nll_sum), int(bytes_sum)


def bits_per_byte(total_nll_nats: float, total_bytes: int) -> float:
    """Convert summed loss in nats over ``total_bytes`` bytes to bits per byte."""
    if total_bytes <= 0:
        return float("nan")
    return total_nll_nats / math.log(2) / total_bytes


def score_choices(
    model, task, *, indices=None, batch_size: int = 16, pad_id: int = 0, greedy: bool = False
):
    """Summed log-probability (nats) of each pair's choice tokens given what precedes them.

    ``task`` is an `anneal.tasks.EncodedTask`; ``indices`` selects pairs (all by default).
    Pairs are right-padded into batches: under a causal mask padding after a sequence never
    changes the logits of its real positions, so no attention mask is needed. Returns one
    float64 per selected pair; with ``greedy`` also whether each choice is the greedy
    continuation (every token the argmax), as lm-eval's loglikelihood requests report.
    """
    import torch

    from annealscale.anneal.loss import token_nll_and_argmax

    indices = np.arange(task.pairs) if indices is None else np.asarray(indices)
    device = next(model.parameters()).device
    scores = np.zeros(len(indices), dtype=np.float64)
    is_greedy = np.zeros(len(indices), dtype=bool)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            sequences = [task.sequence(int(i)) for i in chunk]
            width = max(len(s) for s in sequences)
            batch = np.full((len(chunk), width), pad_id, dtype=np.int64)  # (B, L)
            for row, sequence in enumerate(sequences):
                batch[row, : len(sequence)] = sequence
            ids = torch.as_tensor(batch, device=device)
            nll, argmax = token_nll_and_argmax(model, ids[:, :-1], ids[:, 1:])
            picked, argmax = -nll.cpu().numpy(), argmax.cpu().numpy()  # (B, L-1) each
            for row, (i, sequence) in enumerate(zip(chunk, sequences, strict=True)):
                # target position t predicts token t + 1: the choice is targets start-1..L-2
                first = int(task.choice_starts[i]) - 1
                scores[start + row] = float(picked[row, first : len(sequence) - 1].sum())
                if greedy:
                    best = argmax[row, first : len(sequence) - 1]
                    is_greedy[start + row] = bool((best == sequence[first + 1 :]).all())
    model.train(was_training)
    return (scores, is_greedy) if greedy else scores


def choice_metrics(task, scores: np.ndarray) -> tuple[float, float]:
    """Accuracy (highest-scoring choice is the answer) and mean log-probability (nats) of
    the correct choice, from one score per pair of ``task``. Ties count as wrong unless the
    answer is the first of the tied choices."""
    questions = len(task.answers)
    correct = 0
    logprob_sum = 0.0
    for q in range(questions):
        pairs = np.flatnonzero(task.question_of == q)
        choice_scores = scores[pairs]
        answer = int(task.answers[q])
        correct += int(np.argmax(choice_scores) == answer)
        logprob_sum += float(choice_scores[answer])
    return correct / questions, logprob_sum / questions

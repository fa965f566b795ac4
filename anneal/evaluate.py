"""Held-out bits per byte: the fitted metric."""

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

    device = next(model.parameters()).device
    token_bytes_t = torch.as_tensor(token_bytes, device=device)
    total_nll = 0.0
    total_bytes = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = torch.as_tensor(windows[start : start + batch_size], device=device).long()
            inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T) each
            logits = model(input_ids=inputs).logits.float()  # (B, T, V)
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
            )  # (B*T,)
            nbytes = token_bytes_t[targets.reshape(-1)]
            mask = nbytes > 0
            total_nll += float(nll[mask].sum())
            total_bytes += int(nbytes.sum())
    model.train(was_training)
    return total_nll, total_bytes


def bits_per_byte(total_nll_nats: float, total_bytes: int) -> float:
    """Convert summed loss in nats over ``total_bytes`` bytes to bits per byte."""
    if total_bytes <= 0:
        return float("nan")
    return total_nll_nats / math.log(2) / total_bytes

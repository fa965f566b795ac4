"""Learning-rate schedules as pure functions of (step, total steps)."""

from __future__ import annotations

import math


def linear_decay_lr(step: int, total_steps: int, *, peak_lr: float, warmup_steps: int) -> float:
    """Linear warmup to ``peak_lr``, then linear decay to zero at ``total_steps``.

    The Llama 3 annealing recipe (Dubey et al. 2024, section 3.4.3): the last stage of
    pre-training decays the learning rate linearly to zero on the upsampled domain mix.
    ``step`` is the 0-based index of the optimizer step about to be taken. Warmup climbs
    over ``warmup_steps`` steps to the peak, which the first decay step (``warmup_steps``)
    uses once; the last step (``total_steps - 1``) uses a small positive rate and the
    schedule reaches zero exactly where training ends.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    remaining = total_steps - warmup_steps
    if remaining <= 0:
        return peak_lr
    return peak_lr * max(0.0, (total_steps - step) / remaining)


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    """Warmup length in steps: a fraction of the run, at least one step when asked for."""
    if warmup_fraction <= 0:
        return 0
    return max(1, math.floor(total_steps * warmup_fraction))

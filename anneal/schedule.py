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


def cooldown_steps_for(total_steps: int, cooldown_fraction: float) -> int:
    """Cooldown length of a WSD run: ``round(fraction * total)``, at least one step."""
    return min(total_steps, max(1, round(total_steps * cooldown_fraction)))


def wsd_lr(
    step: int,
    total_steps: int,
    *,
    peak_lr: float,
    warmup_steps: int,
    cooldown_steps: int,
    shape: str = "linear",
) -> float:
    """Warmup-stable-decay: warm up, hold ``peak_lr``, then cool down to zero.

    Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations"): a constant learning rate followed by a short cooldown matches cosine,
    and the constant part (the trunk) does not depend on the run's length, so runs of
    several lengths branch off one trunk. The warmup is `linear_decay_lr`'s ramp; the
    cooldown starts at ``b = total_steps - cooldown_steps`` with the peak and reaches zero
    exactly where training ends: ``peak (1 - x)`` (``linear``) or ``peak (1 - sqrt(x))``
    (``1-sqrt``, their best shape) with ``x = (step - b) / cooldown_steps``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 < cooldown_steps <= total_steps:
        raise ValueError(f"cooldown_steps must be in [1, {total_steps}], got {cooldown_steps}")
    if shape not in ("linear", "1-sqrt"):
        raise ValueError(f"shape must be 'linear' or '1-sqrt', got {shape!r}")
    branch = total_steps - cooldown_steps
    if step >= branch:
        x = min(1.0, (step - branch) / cooldown_steps)
        decay = 1.0 - x if shape == "linear" else 1.0 - math.sqrt(x)
        return peak_lr * decay * min(1.0, trunk_lr(step, peak_lr=1.0, warmup_steps=warmup_steps))
    return trunk_lr(step, peak_lr=peak_lr, warmup_steps=warmup_steps)


def trunk_lr(step: int, *, peak_lr: float, warmup_steps: int) -> float:
    """The WSD trunk: `linear_decay_lr`'s warmup ramp, then ``peak_lr`` for ever."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    return peak_lr


def branch_step(total_steps: int, cooldown_fraction: float) -> int:
    """Step at which a WSD run of ``total_steps`` leaves the trunk for its cooldown."""
    return total_steps - cooldown_steps_for(total_steps, cooldown_fraction)


def lr_multiplier(schedule, step: int, total_steps: int, *, trunk: bool = False) -> float:
    """Learning rate over the peak at ``step`` for a `anneal.run_spec.ScheduleSpec`.

    ``trunk`` selects the WSD trunk (no cooldown): the run then stops at a branch point,
    not at the end of its schedule.
    """
    if schedule.kind == "linear":
        warmup = warmup_steps_for(total_steps, schedule.warmup_fraction)
        return linear_decay_lr(
            min(step, total_steps - 1), total_steps, peak_lr=1.0, warmup_steps=warmup
        )
    if trunk:
        return trunk_lr(step, peak_lr=1.0, warmup_steps=schedule.warmup_steps)
    return wsd_lr(
        step,
        total_steps,
        peak_lr=1.0,
        warmup_steps=schedule.warmup_steps,
        cooldown_steps=cooldown_steps_for(total_steps, schedule.cooldown_fraction),
        shape=schedule.cooldown_shape,
    )

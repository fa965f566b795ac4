"""Pure numerical core: the learning-rate schedule, FLOP formulas and bits per byte,
checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from annealscale.anneal.evaluate import bits_per_byte
from annealscale.anneal.flops import (
    ModelShape,
    eval_flops,
    forward_flops_per_token,
    train_flops,
)
from annealscale.anneal.schedule import linear_decay_lr, warmup_steps_for


def test_linear_decay_hand_computed():
    # peak 1e-3, 10 steps, 2 warmup: ramp 1/3, 2/3, then (10 - s) / 8 of the peak, which
    # step 2 (the first decay step) uses once
    lrs = [linear_decay_lr(s, 10, peak_lr=1e-3, warmup_steps=2) for s in range(10)]
    expected = [1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    assert lrs == pytest.approx([1e-3 * e for e in expected], rel=1e-12)


def test_warmup_ramps_linearly_to_peak():
    peak, warmup = 3e-4, 5
    ramp = [linear_decay_lr(s, 100, peak_lr=peak, warmup_steps=warmup) for s in range(warmup)]
    assert ramp == pytest.approx([peak * (s + 1) / (warmup + 1) for s in range(warmup)])
    assert ramp[0] > 0  # the first step already moves the weights
    assert ramp[-1] < peak  # the peak is used once, by the first decay step
    assert linear_decay_lr(warmup, 100, peak_lr=peak, warmup_steps=warmup) == pytest.approx(peak)


@pytest.mark.parametrize(("total", "warmup"), [(1, 0), (2, 1), (7, 0), (50, 5), (1000, 37)])
def test_schedule_shape(total, warmup):
    peak = 2e-3
    lrs = [linear_decay_lr(s, total, peak_lr=peak, warmup_steps=warmup) for s in range(total)]
    assert all(0 < lr <= peak for lr in lrs)
    assert max(lrs) == pytest.approx(peak)
    decay = lrs[warmup:]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))  # strictly decreasing
    assert lrs.count(max(lrs)) == 1  # the peak is held for exactly one step
    assert lrs[-1] == pytest.approx(peak / (total - warmup))  # one step before zero
    # never negative, and zero once training is over
    assert linear_decay_lr(total, total, peak_lr=peak, warmup_steps=warmup) == 0.0
    assert linear_decay_lr(total + 5, total, peak_lr=peak, warmup_steps=warmup) == 0.0


def test_zero_warmup_starts_at_peak():
    assert linear_decay_lr(0, 4, peak_lr=1.0, warmup_steps=0) == 1.0
    assert [linear_decay_lr(s, 4, peak_lr=1.0, warmup_steps=0) for s in range(4)] == [
        1.0,
        0.75,
        0.5,
        0.25,
    ]


def test_warmup_as_long_as_the_run_only_climbs():
    lrs = [linear_decay_lr(s, 4, peak_lr=1.0, warmup_steps=4) for s in range(4)]
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_non_positive_total_steps_rejected():
    with pytest.raises(ValueError, match="total_steps must be positive"):
        linear_decay_lr(0, 0, peak_lr=1e-3, warmup_steps=0)


@pytest.mark.parametrize(
    ("total", "fraction", "expected"),
    [(100, 0.05, 5), (100, 0.1, 10), (99, 0.1, 9), (10, 0.01, 1), (1, 0.5, 1), (100, 0.0, 0)],
)
def test_warmup_steps_for(total, fraction, expected):
    assert warmup_steps_for(total, fraction) == expected


# --- FLOPs and money ---------------------------------------------------------------------

SHAPE = ModelShape(non_embedding_params=1_000_000, n_layer=4, d_model=128)


def test_forward_flops_per_token_kaplan():
    # Kaplan et al. 2020, table 1: 2N + 2 n_layer n_ctx d_model
    assert forward_flops_per_token(SHAPE, context=256) == 2e6 + 2 * 4 * 256 * 128


def test_train_flops_is_six_n_plus_attention_per_token():
    tokens, context = 10_000, 256
    per_token = 6 * 1_000_000 + 6 * 4 * 256 * 128
    assert train_flops(SHAPE, tokens, context) == per_token * tokens
    assert train_flops(SHAPE, tokens, context) == 3 * eval_flops(SHAPE, tokens, context)
    assert eval_flops(SHAPE, tokens, context) == (2e6 + 2 * 4 * 256 * 128) * tokens


# --- bits per byte ------------------------------------------------------------------------


@pytest.mark.parametrize("n_bytes", [1, 7, 12345])
def test_bits_per_byte_of_one_bit_per_byte(n_bytes):
    assert bits_per_byte(math.log(2) * n_bytes, n_bytes) == pytest.approx(1.0, rel=1e-12)


def test_bits_per_byte_hand_computed():
    # 8 bytes predicted with a loss of ln(16) nats = 4 bits: half a bit per byte
    assert bits_per_byte(math.log(16), 8) == pytest.approx(0.5)


def test_bits_per_byte_without_bytes_is_nan():
    assert math.isnan(bits_per_byte(1.0, 0))


def test_wsd_linear_cooldown_hand_computed():
    from annealscale.anneal.schedule import wsd_lr

    # 10 steps, 2 warmup, 4 cooldown: ramp 1/3, 2/3, hold, cooldown from step 6:
    # (10 - s) / 4 of the peak
    lrs = [wsd_lr(s, 10, peak_lr=1e-3, warmup_steps=2, cooldown_steps=4) for s in range(10)]
    expected = [1 / 3, 2 / 3, 1, 1, 1, 1, 1, 3 / 4, 2 / 4, 1 / 4]
    assert lrs == pytest.approx([1e-3 * e for e in expected], rel=1e-12)
    assert wsd_lr(10, 10, peak_lr=1e-3, warmup_steps=2, cooldown_steps=4) == 0.0


def test_wsd_one_minus_sqrt_cooldown_hand_computed():
    from annealscale.anneal.schedule import wsd_lr

    lrs = [
        wsd_lr(s, 8, peak_lr=2.0, warmup_steps=0, cooldown_steps=4, shape="1-sqrt")
        for s in range(9)
    ]
    expected = [
        2,
        2,
        2,
        2,
        2,
        2 * (1 - 0.5),
        2 * (1 - math.sqrt(0.5)),
        2 * (1 - math.sqrt(0.75)),
        0,
    ]
    assert lrs == pytest.approx(expected, rel=1e-12)
    # 1-sqrt drops faster at first and lies below linear through the whole cooldown
    linear = [wsd_lr(s, 8, peak_lr=2.0, warmup_steps=0, cooldown_steps=4) for s in range(5, 8)]
    assert all(a < b for a, b in zip(lrs[5:8], linear, strict=True))


@pytest.mark.parametrize("total", [5, 8, 16, 33, 64, 1000])
def test_wsd_runs_of_any_length_share_the_trunk(total):
    from annealscale.anneal.schedule import branch_step, cooldown_steps_for, trunk_lr, wsd_lr

    warmup, fraction = 2, 0.2
    cooldown = cooldown_steps_for(total, fraction)
    assert cooldown == max(1, round(total * fraction))
    branch = branch_step(total, fraction)
    assert branch == total - cooldown
    for s in range(branch + 1):  # the trunk, up to and including the first cooldown step
        lr = wsd_lr(s, total, peak_lr=1e-3, warmup_steps=warmup, cooldown_steps=cooldown)
        assert lr == pytest.approx(trunk_lr(s, peak_lr=1e-3, warmup_steps=warmup), rel=1e-12)
    cool = [
        wsd_lr(s, total, peak_lr=1e-3, warmup_steps=warmup, cooldown_steps=cooldown)
        for s in range(branch, total)
    ]
    assert all(a > b > 0 for a, b in zip(cool, cool[1:], strict=False))


def test_wsd_rejects_bad_arguments():
    from annealscale.anneal.schedule import wsd_lr

    with pytest.raises(ValueError, match="cooldown_steps"):
        wsd_lr(0, 10, peak_lr=1.0, warmup_steps=0, cooldown_steps=0)
    with pytest.raises(ValueError, match="shape"):
        wsd_lr(0, 10, peak_lr=1.0, warmup_steps=0, cooldown_steps=2, shape="cosine")


def test_lr_multiplier_dispatches_on_the_spec():
    from annealscale.anneal.run_spec import ScheduleSpec
    from annealscale.anneal.schedule import lr_multiplier

    linear = ScheduleSpec(kind="linear", peak_lr=1e-3, warmup_fraction=0.2)
    assert [lr_multiplier(linear, s, 10) for s in range(10)] == pytest.approx(
        [linear_decay_lr(s, 10, peak_lr=1.0, warmup_steps=2) for s in range(10)]
    )
    wsd = ScheduleSpec(kind="wsd", peak_lr=1e-3, warmup_steps=1, cooldown_fraction=0.25)
    assert [lr_multiplier(wsd, s, 8) for s in range(8)] == pytest.approx(
        [0.5, 1, 1, 1, 1, 1, 1, 0.5]  # cooldown of 2 from step 6
    )
    # a trunk never cools down, whatever its segment's length
    assert [lr_multiplier(wsd, s, 8, trunk=True) for s in range(8)] == pytest.approx(
        [0.5] + [1] * 7
    )

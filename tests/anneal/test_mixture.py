"""The data mixture: exact domain counts per batch and exact row accounting across epochs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annealscale.anneal.mixture import RowStream, domain_counts, epochs_over

# Dyadic fractions are exact in binary, so ties (x.5) are real ties and round half up
# (the documented floor(x + 1/2)) can be checked exactly.
DYADIC = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0)
OTHER = (0.1, 0.3, 1 / 3, 0.45, 0.6, 2 / 3, 0.9, 0.999)
SHAPES = [(n, b) for n in (1, 2, 3, 7, 64, 1000) for b in (1, 2, 3, 5, 8, 16, 33)]


@pytest.mark.parametrize("fraction", DYADIC)
def test_domain_counts_total_rounds_half_up_exactly(fraction):
    for n, batch in SHAPES:
        counts = domain_counts(n, batch, fraction)
        assert counts.shape == (n,)
        assert counts.dtype.kind == "i"
        assert counts.sum() == math.floor(fraction * n * batch + 0.5), (n, batch)


@pytest.mark.parametrize("fraction", DYADIC + OTHER)
def test_domain_counts_never_drift(fraction):
    for n, batch in SHAPES:
        counts = domain_counts(n, batch, fraction)
        target = fraction * batch

        assert abs(counts.sum() - fraction * n * batch) <= 0.5 + 1e-9, (n, batch)
        assert np.all(counts >= 0) and np.all(counts <= batch), (n, batch)
        assert np.all(np.abs(counts - target) < 1 + 1e-9), (n, batch)
        cumulative = np.cumsum(counts)
        drift = np.abs(cumulative - target * np.arange(1, n + 1))
        assert np.all(drift <= 0.5 + 1e-9), (n, batch)


def test_domain_counts_hand_computed():
    # B = 5, f = 0.5: edges floor(2.5 i + 0.5) = 0, 3, 5, 8, 10
    assert domain_counts(4, 5, 0.5).tolist() == [3, 2, 3, 2]
    # B = 8, f = 0.05: edges floor(0.4 i + 0.5) = 0, 0, 1, 1, 2
    assert domain_counts(4, 8, 0.05).tolist() == [0, 1, 0, 1]
    assert domain_counts(3, 8, 0.0).tolist() == [0, 0, 0]
    assert domain_counts(3, 8, 1.0).tolist() == [8, 8, 8]
    assert domain_counts(0, 8, 0.5).tolist() == []


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_domain_counts_rejects_fraction_outside_unit_interval(fraction):
    with pytest.raises(ValueError, match="fraction must be in"):
        domain_counts(4, 8, fraction)


# --- RowStream --------------------------------------------------------------------------

POOL = np.arange(23 * 2).reshape(23, 2)  # (rows, width); row i is [2i, 2i + 1]
BLOCKS = (5, 0, 1, 9, 8)  # uneven, with an empty block; sums to 23


class Epochs:
    """An epoch function over POOL in uneven blocks that records the epochs it started."""

    def __init__(self, blocks=BLOCKS):
        self.blocks = blocks
        self.started: list[int] = []

    def __call__(self, epoch: int):
        self.started.append(epoch)
        start = 0
        for size in self.blocks:
            yield POOL[start : start + size]
            start += size


def _expected_rows(first: int, k: int) -> np.ndarray:
    return POOL[np.arange(first, first + k) % len(POOL)]


@pytest.mark.parametrize(
    "takes",
    [
        [1] * 60,
        [5, 5, 5, 5, 3, 5],
        [23, 23, 23],
        [22, 2, 21],
        [100],
        [7, 0, 11, 0, 30, 4],
        [3, 17, 46, 1, 9],
    ],
)
def test_row_stream_cycles_in_order_with_exact_accounting(takes):
    epochs = Epochs()
    stream = RowStream(epochs)
    taken = 0
    for k in takes:
        rows = stream.take(k)
        assert rows.shape == (k, 2)
        np.testing.assert_array_equal(rows, _expected_rows(taken, k))
        taken += k
        assert stream.rows_taken == taken
        # an epoch starts only when its rows are needed
        assert stream.epochs_started == math.ceil(taken / len(POOL))
    assert epochs.started == list(range(stream.epochs_started))


def test_take_zero_with_rows_buffered_returns_empty():
    stream = RowStream(Epochs())
    stream.take(3)
    rows = stream.take(0)
    assert rows.shape == (0, 2)
    assert stream.rows_taken == 3
    np.testing.assert_array_equal(stream.take(2), POOL[3:5])


@pytest.mark.parametrize("before", [[], [5]], ids=["fresh-stream", "buffer-just-emptied"])
def test_take_zero_with_empty_buffer_returns_empty(before):
    stream = RowStream(Epochs())
    for k in before:
        stream.take(k)
    rows = stream.take(0)
    assert len(rows) == 0
    assert stream.rows_taken == sum(before)


def test_epoch_without_rows_raises():
    stream = RowStream(Epochs(blocks=(0, 0)))
    with pytest.raises(ValueError, match="no rows in a whole epoch"):
        stream.take(1)

    stream = RowStream(lambda epoch: iter(()))
    with pytest.raises(ValueError, match="no rows in a whole epoch"):
        stream.take(1)


def test_epochs_over():
    assert epochs_over(46, 23) == 2.0
    assert epochs_over(10, 40) == 0.25
    assert epochs_over(0, 0) == math.inf


# --- a whole anneal's mixture, as the training loop draws it ------------------------------


def _simulate(steps: int, batch: int, micro: int, fraction: float, pool_rows: int):
    """Draw every micro-batch of an anneal from a domain pool and a replay pool."""
    domain_pool = np.arange(pool_rows)[:, None]  # (P, 1)
    replay_pool = -1 - np.arange(50)[:, None]  # (Q, 1), negative ids

    def blocks(pool, size):
        def epoch(_):
            for start in range(0, len(pool), size):
                yield pool[start : start + size]

        return epoch

    domain, replay = RowStream(blocks(domain_pool, 7)), RowStream(blocks(replay_pool, 16))
    counts = domain_counts(steps * (batch // micro), micro, fraction)
    seen = []
    for k in counts:
        rows = np.concatenate([domain.take(int(k)), replay.take(micro - int(k))])  # (M, 1)
        assert rows.shape == (micro, 1)
        seen.append(rows[:, 0])
    return counts, domain, replay, np.concatenate(seen)


@pytest.mark.parametrize(
    ("steps", "batch", "micro", "fraction", "pool_rows"),
    [
        (10, 16, 8, 0.5, 30),
        (37, 32, 8, 0.3, 101),
        (5, 24, 8, 0.75, 1000),
        (12, 15, 5, 1 / 3, 17),
    ],
)
def test_anneal_mixture_accounting(steps, batch, micro, fraction, pool_rows):
    counts, domain, replay, seen = _simulate(steps, batch, micro, fraction, pool_rows)
    total = steps * batch

    domain_rows = int(counts.sum())
    assert domain_rows == math.floor(fraction * total + 0.5)
    assert domain.rows_taken == domain_rows
    assert replay.rows_taken == total - domain_rows
    assert domain.epochs_started == math.ceil(domain_rows / pool_rows)
    assert epochs_over(domain.rows_taken, pool_rows) == domain_rows / pool_rows
    np.testing.assert_array_equal(seen[seen >= 0], np.arange(domain_rows) % pool_rows)
    np.testing.assert_array_equal(-1 - seen[seen < 0], np.arange(total - domain_rows) % 50)


@pytest.mark.parametrize("fraction", [1.0, 0.05], ids=["all-domain", "first-batch-no-domain"])
def test_anneal_mixture_with_empty_share_in_first_batch(fraction):
    counts, domain, replay, _ = _simulate(4, 16, 8, fraction, 30)
    assert domain.rows_taken == counts.sum()
    assert replay.rows_taken == 4 * 16 - counts.sum()

"""The anneal's data mixture: domain windows at fraction ``r``, general replay for the rest.

Token accounting is exact: `domain_counts` spreads ``round(r * total)`` domain sequences
evenly over the micro-batches (cumulative rounding, so no batch drifts by more than one
sequence from ``r * batch``), and `RowStream` hands out rows from a pool that is re-read
epoch after epoch when the anneal needs more domain tokens than the pool holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np


def domain_counts(n_batches: int, batch_size: int, fraction: float) -> np.ndarray:
    """Domain sequences in each of ``n_batches`` batches of ``batch_size`` sequences.

    The counts sum to ``round(fraction * n_batches * batch_size)`` and batch ``i`` holds
    ``floor(f (i+1) B + 1/2) - floor(f i B + 1/2)`` of them.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    edges = np.floor(fraction * batch_size * np.arange(n_batches + 1) + 0.5).astype(np.int64)
    return np.diff(edges)


class RowStream:
    """Rows of a dataset handed out ``k`` at a time, cycling over epochs.

    ``epoch`` is called to start each pass and yields arrays of rows ``(n, width)``.
    ``rows_taken`` and ``epochs_started`` are the exact accounting the results record.
    """

    def __init__(self, epoch: Callable[[int], Iterator[np.ndarray]]):
        self._epoch = epoch
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._iter: Iterator[np.ndarray] | None = None
        self.rows_taken = 0
        self.epochs_started = 0

    def take(self, k: int) -> np.ndarray:
        """The next ``k`` rows ``(k, width)``; ``k`` may be zero."""
        if k == 0:
            return self._empty_rows()
        while self._buffered < k:
            self._buffer.append(self._next_block())
            self._buffered += len(self._buffer[-1])
        block = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        rows, rest = block[:k], block[k:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        self.rows_taken += k
        return rows

    def skip(self, k: int, chunk: int = 4096) -> None:
        """Discard the next ``k`` rows, as if taken: a resumed stream skips what its
        checkpoint had consumed."""
        while k > 0:
            self.take(min(k, chunk))
            k -= min(k, chunk)

    def _empty_rows(self) -> np.ndarray:
        if not self._buffer:
            self._buffer.append(self._next_block())
            self._buffered = len(self._buffer[0])
        return self._buffer[0][:0]

    def _next_block(self) -> np.ndarray:
        while True:
            if self._iter is None:
                self._iter = iter(self._epoch(self.epochs_started))
                self.epochs_started += 1
                self._epoch_rows = 0
            block = next(self._iter, None)
            if block is None:
                if self._epoch_rows == 0:
                    raise ValueError("dataset yielded no rows in a whole epoch")
                self._iter = None
                continue
            if len(block):
                self._epoch_rows += len(block)
                return block


def epochs_over(rows_taken: int, pool_rows: int) -> float:
    """Passes over a pool of ``pool_rows`` rows when ``rows_taken`` were read."""
    return rows_taken / pool_rows if pool_rows else math.inf

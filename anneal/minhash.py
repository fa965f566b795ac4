"""MinHash signatures and a banded LSH index for near-duplicate removal, in numpy.

A document is the set of its word ``shingle``-grams. MinHash (Broder 1997) estimates the
Jaccard similarity of two such sets as the fraction of hash functions on which their
minimum hash agrees. The hash family is multiply-shift on 64-bit integers (Dietzfelbinger
et al. 1997): ``h_i(x) = (a_i * x + b_i) >> 32`` with odd ``a_i``, exact in wrapping uint64
arithmetic. LSH (Indyk and Motwani 1998; Leskovec et al., *Mining of Massive Datasets*,
ch. 3) splits a signature into ``bands`` of ``rows`` values; two documents are candidates
when any band agrees, which happens with probability ``1 - (1 - s^rows)^bands`` at
similarity ``s`` (an S-curve through about ``(1/bands)^(1/rows)``).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: spreads rolled word hashes


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` parameters of ``num_perm`` multiply-shift hashes; ``a`` is odd."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def shingle_hashes(text: str, shingle: int) -> np.ndarray:
    """64-bit hashes of the word ``shingle``-grams of ``text`` (lower-cased), ``(S,)``."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    if len(words) < shingle:
        shingle = len(words)
    n = len(words) - shingle + 1
    out = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(shingle):  # polynomial roll over the window, wrapping mod 2^64
            out = out * _MIX + h[j : j + n]
    return np.unique(out)


def signature(text: str, a: np.ndarray, b: np.ndarray, shingle: int) -> np.ndarray:
    """MinHash signature ``(P,)`` uint32 of ``text``; all ones for a text without words."""
    hashes = shingle_hashes(text, shingle)
    if hashes.size == 0:
        return np.full(a.shape[0], np.iinfo(np.uint32).max, dtype=np.uint32)
    with np.errstate(over="ignore"):
        mixed = (hashes[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)  # (S, P)
    return mixed.min(axis=0).astype(np.uint32)


def signature_flops(n_shingles: int, num_perm: int) -> float:
    """Modelled operations of one signature: a multiply, an add, a shift and a compare per
    (shingle, hash) pair."""
    return 4.0 * n_shingles * num_perm


def choose_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows == num_perm`` whose S-curve midpoint
    ``(1/bands)^(1/rows)`` is closest to ``threshold``."""
    best = None
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        gap = abs((1.0 / bands) ** (1.0 / rows) - threshold)
        if best is None or gap < best[0]:
            best = (gap, bands, rows)
    return best[1], best[2]


@dataclass
class LshIndex:
    """Signatures of the documents kept so far, bucketed by band; documents are added in
    stream order, so a document is a duplicate only of documents before it."""

    bands: int
    rows: int
    threshold: float

    def __post_init__(self):
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self._signatures: list[np.ndarray] = []

    def duplicate_of(self, sig: np.ndarray) -> int | None:
        """Index of an earlier kept document whose estimated Jaccard similarity with
        ``sig`` is at least the threshold, or None."""
        seen: set[int] = set()
        for band in range(self.bands):
            key = sig[band * self.rows : (band + 1) * self.rows].tobytes()
            for j in self._buckets[band].get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                if float(np.mean(self._signatures[j] == sig)) >= self.threshold:
                    return j
        return None

    def add(self, sig: np.ndarray) -> None:
        j = len(self._signatures)
        self._signatures.append(sig)
        for band in range(self.bands):
            key = sig[band * self.rows : (band + 1) * self.rows].tobytes()
            self._buckets[band].setdefault(key, []).append(j)


def jaccard(x: str, y: str, shingle: int) -> float:
    """Exact Jaccard similarity of the shingle sets (for tests and checks)."""
    a, b = set(shingle_hashes(x, shingle).tolist()), set(shingle_hashes(y, shingle).tolist())
    return len(a & b) / max(len(a | b), 1)

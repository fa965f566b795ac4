"""Types of the CLI's numeric options: a value that is not finite or not in range is an
argparse error (one line, exit code 2) before any command runs; ``--tokens -5`` or
``--tokens nan`` would otherwise propose cells no anneal can run."""

from __future__ import annotations

import argparse
import math


def positive_float(text: str) -> float:
    """A finite number above zero (tokens, USD, targets): the type of such options."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number above zero (counts of cells, bytes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value

"""The one error type of the analysis package."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Invalid input to the analysis: the message names what is wrong and what to do."""


class NotFittedError(AnalysisError, AttributeError):
    """An estimator was used before ``fit``; an AttributeError too, so ``hasattr`` is False."""

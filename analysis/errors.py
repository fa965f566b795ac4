"""The error type of the analysis package: the project's error, so the CLI reports it as
one line, and a ValueError, as numerical libraries raise for bad input."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from annealscale.core.errors import AnnealscaleError


class AnalysisError(AnnealscaleError, ValueError):
    """Invalid input to the analysis: the message names what is wrong and what to do."""


class NotFittedError(AnalysisError, SklearnNotFittedError):
    """An estimator was used before ``fit``: an AttributeError too, so ``hasattr`` is False,
    and scikit-learn's NotFittedError, so code catching that (``check_is_fitted``) holds."""

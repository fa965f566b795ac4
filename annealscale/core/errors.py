"""The one error type the project raises for bad input.

Its message is a single line that names the thing at fault (a spec field, a file, a
source) and what to do about it; the CLI prints it without a traceback and exits with 2.
"""

from __future__ import annotations


class AnnealscaleError(Exception):
    """Bad input or an unmet precondition, reported to the user as one line."""


class SpecError(AnnealscaleError, ValueError):
    """A spec field is missing, unknown or out of range; the message names it.

    A ValueError too, so that pydantic carries it (with its field path) out of a model
    validator into the `ValidationError` that `annealscale.core.spec_model` turns back
    into one `SpecError` naming the whole path.
    """

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path or 'spec'}: {problem}")


def check(condition: bool, field: str, problem: str) -> None:
    """Raise `SpecError` for ``field`` unless ``condition`` holds."""
    if not condition:
        raise SpecError(field, problem)

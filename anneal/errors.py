"""The one error type the project raises for bad input.

Its message is a single line that names the thing at fault (a spec field, a file, a
source) and what to do about it; the CLI prints it without a traceback.
"""

from __future__ import annotations


class AnnealscaleError(Exception):
    """Bad input or an unmet precondition, reported to the user as one line."""

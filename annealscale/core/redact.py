"""Secrets kept out of what annealscale prints, logs and writes.

A URL may carry credentials as user info (``http://alice:s3cret@head:8265``,
``https://user:token@mlflow.example``). Every message naming an address or a URI passes
through `redact`, the CLI's error line and log handler included, so a password given in
``--address`` or ``$RAY_ADDRESS`` never reaches a terminal, a log file or a job table.
"""

from __future__ import annotations

import logging
import re
from typing import Any

HIDDEN = "***"
"""What stands in for the user info of a URL."""

# scheme://USERINFO@host: user info is everything between '//' and the last '@' before the
# host part ends (no '/', whitespace or quote in between).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")


def redact(text: str) -> str:
    """``text`` with the user info of every URL in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries credentials (``scheme://user[:password]@host``)."""
    return _USERINFO.search(url) is not None


def redact_plain(obj: Any) -> Any:
    """A JSON-ready structure (dicts, lists, strings) with every string redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_plain(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True

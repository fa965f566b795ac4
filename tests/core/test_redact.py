"""Credentials in URLs never reach a message, a log line or a written file."""

from __future__ import annotations

import logging

import pytest

from annealscale.core.redact import RedactingFilter, has_userinfo, redact, redact_plain


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:s3cret@head:8265", "http://***@head:8265"),
        (
            "--address ray://bob:pw@10.0.0.1:10001: cannot",
            "--address ray://***@10.0.0.1:10001: cannot",
        ),
        ("https://tok@mlflow.example/path?x=1", "https://***@mlflow.example/path?x=1"),
        ("s3://AKIA:abc%2Fdef@bucket/key", "s3://***@bucket/key"),
        ("two: http://a:b@h1 and https://c:d@h2/x", "two: http://***@h1 and https://***@h2/x"),
    ],
)
def test_user_info_is_replaced(text, shown):
    assert redact(text) == shown
    assert has_userinfo(text)


@pytest.mark.parametrize(
    "text",
    ["http://head:8265", "user@example.com wrote", "s3://bucket/a@b.parquet", "demo:base", ""],
)
def test_text_without_credentials_is_unchanged(text):
    assert redact(text) == text
    assert not has_userinfo(text)


def test_nested_structures_are_redacted_everywhere():
    plain = {"a": ["http://u:p@h", {"b": "https://x:y@z/q"}], "n": 3}
    assert redact_plain(plain) == {"a": ["http://***@h", {"b": "https://***@z/q"}], "n": 3}


def test_log_records_are_redacted_with_their_arguments(caplog):
    logger = logging.getLogger("annealscale.test_redact")
    handler = caplog.handler
    handler.addFilter(RedactingFilter())
    try:
        logger.warning("connecting to %s", "ray://alice:hunter2@head:10001")
    finally:
        handler.removeFilter(handler.filters[-1])
    assert "hunter2" not in caplog.text
    assert "ray://***@head:10001" in caplog.text

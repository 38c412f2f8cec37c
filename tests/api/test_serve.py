"""`dllmflow.commands.serve` helpers (no server started)."""

from __future__ import annotations

import logging

import pytest

from dllmflow.commands.serve import RedactTokenParam, redact_query


def test_access_log_never_shows_the_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/episodes/ep-1?x=1&token=s3cret&y=2", "1.1", 303),
        None,
    )
    assert RedactTokenParam().filter(record)
    assert "s3cret" not in record.getMessage()
    assert "/episodes/ep-1?x=1&token=***&y=2" in record.getMessage()


@pytest.mark.parametrize(
    "path",
    [
        "/episodes?%74oken=s3cret",
        "/episodes?x=1&%74%6F%6B%65%6E=s3cret",
        "/episodes?TOKEN=s3cret&y=2",
        "/episodes?%2574oken=s3cret",
        "/episodes?a=1;token=s3cret",
    ],
)
def test_encoded_token_parameter_names_are_redacted(path: str) -> None:
    redacted = redact_query(path)
    assert "s3cret" not in redacted and "=***" in redacted


def test_other_parameters_are_left_alone() -> None:
    assert redact_query("/episodes?status=running&tokens=5") == "/episodes?status=running&tokens=5"

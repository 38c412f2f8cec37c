"""`dllmflow.commands.serve` helpers (no server started)."""

from __future__ import annotations

import logging

from dllmflow.commands.serve import RedactTokenParam


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

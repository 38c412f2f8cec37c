"""The dashboard's Jinja2 environment (templates/ next to this file, autoescaped)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.templating import Jinja2Templates

from dllmflow.api.auth import CSRF_FIELD, CSRF_HEADER, CSRF_VALUE
from dllmflow.api.views import SEGMENTS
from dllmflow.store.models import EpisodeStatus
from dllmflow.workflows.types import POLICIES

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"


def timestamp(value: float | datetime | None) -> str:
    if value is None:
        return "–"
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


TEMPLATES.env.globals.update(
    statuses=EpisodeStatus.ALL,
    finished=EpisodeStatus.FINISHED,
    policies=POLICIES,
    segments=SEGMENTS,
    csrf_field=CSRF_FIELD,
    csrf_header=CSRF_HEADER,
    csrf_value=CSRF_VALUE,
)
TEMPLATES.env.filters.update(seconds=seconds, when=timestamp, number=number)

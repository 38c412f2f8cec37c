"""The stack page's replica table: load columns from `serving_status` rows, in order."""

from __future__ import annotations

import re
from types import SimpleNamespace

from dllmflow.api.templating import TEMPLATES


def render(replicas: list[dict]) -> str:
    request = SimpleNamespace(state=SimpleNamespace(csrf="c"), url=SimpleNamespace(path="/stack"))
    return TEMPLATES.env.get_template("stack.html").render(
        request=request, health=[], replicas=replicas, replica_error=None, links={}, nav="stack"
    )


def test_replica_rows_show_queue_batch_and_memory() -> None:
    row = {
        "backend": "diffusion",
        "replica": "dllmflow-diffusion-0",
        "alive": True,
        "checkpoint": "diffusion",
        "device": "cuda",
        "waiting": 3,
        "running": 7,
        "mean_batch": 5.25,
        "memory_mb": 812.5,
        "served": 40,
    }
    html = render([row])
    headers = re.findall(r"<th>([^<]+)</th>", html[html.index('id="replicas"') :])
    assert headers[:9] == [
        "Backend", "Name", "Alive", "Checkpoint", "Device",
        "Queue", "Running", "Mean batch", "Memory (MB)",
    ]  # fmt: skip
    tr = html[html.index('<tr data-replica="dllmflow-diffusion-0">') :]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", tr[: tr.index("</tr>")])
    assert cells[1] == "dllmflow-diffusion-0"
    assert cells[5:9] == ["3", "7", "5.25", "812.5"]
    assert cells[9].strip() == "served=40"  # the rest, once each


def test_a_replica_without_load_figures_shows_dashes() -> None:
    html = render([{"backend": "ar", "replica": "dllmflow-ar-0", "alive": False}])
    tr = html[html.index('<tr data-replica="dllmflow-ar-0">') :]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", tr[: tr.index("</tr>")])
    assert cells[5:9] == ["–"] * 4

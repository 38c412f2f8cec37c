"""Server-rendered dashboard pages (HTML checked here; rendering in a browser: test_browser)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from dllmflow.api.auth import COOKIE_NAME
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetter, DeadLetterQueue, ProgressStream
from tests.api.conftest import follow

pytestmark = pytest.mark.integration


@pytest.fixture
def browser_client(anon: httpx.Client, api_token: str) -> Iterator[httpx.Client]:
    login = anon.post("/login", data={"token": api_token, "next": "/episodes"})
    anon.cookies.set(COOKIE_NAME, login.cookies[COOKIE_NAME])
    anon.headers["accept"] = "text/html"
    yield anon


def test_episode_list_filters_by_status(browser_client: httpx.Client, seeded) -> None:
    page = browser_client.get("/episodes").text
    assert seeded.completed in page and seeded.running in page
    dead = browser_client.get("/episodes", params={"status": "dead_lettered"}).text
    assert seeded.dead in dead and seeded.completed not in dead


def test_episode_list_filters_by_policy_text_and_eval_run_and_pages(
    browser_client: httpx.Client, stack
) -> None:
    episodes = EpisodeRepository(stack)
    tag = uuid.uuid4().hex[:8]
    made = {
        policy: episodes.create(question=f"Filter {tag} 100%_{policy}?", policy=policy, budgets={})
        for policy in ("ar", "diffusion", "routed")
    }

    def listed(**params) -> list[str]:
        html = browser_client.get("/episodes", params=params).text
        return re.findall(r'<tr data-episode="([^"]+)"', html)

    assert set(listed(q=tag)) == {e.id for e in made.values()}
    assert listed(q=tag, policy="ar") == [made["ar"].id]
    assert listed(q=f"{tag} 100%_d") == [made["diffusion"].id]  # % and _ match literally
    assert listed(q=tag, policy="telepathy") == listed(q=tag)  # an unknown policy filters nothing
    assert listed(q=tag, eval_run="no-such-run") == []
    # Pages of two, newest first: the third episode is alone on page 2, with a link back.
    first, second = listed(q=tag, limit=2), listed(q=tag, limit=2, page=2)
    assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
    html = browser_client.get("/episodes", params={"q": tag, "limit": 2}).text
    assert 'rel="next"' in html and "page=2" in html and 'rel="prev"' not in html


def test_episode_page_has_waterfall_timeline_and_temporal_link(
    browser_client: httpx.Client, stack, seeded
) -> None:
    page = browser_client.get(f"/episodes/{seeded.completed}").text
    assert 'id="waterfall"' in page and 'data-steps="4"' in page
    for segment in ("queue", "decode", "tool", "checkpoint", "orchestration"):
        assert f"seg seg-{segment}" in page
    assert page.count('class="turn') == 4
    assert "not valid JSON" in page  # the invalid turn's error
    workflow = f"/namespaces/default/workflows/episode-{seeded.completed}"
    assert f"{stack.temporal_ui_url}{workflow}" in page
    assert 'id="live"' not in page  # finished: nothing to follow


def test_running_episode_page_follows_progress(browser_client: httpx.Client, seeded) -> None:
    page = browser_client.get(f"/episodes/{seeded.running}").text
    assert f'data-events-url="/api/episodes/{seeded.running}/events"' in page
    assert 'id="waterfall-empty"' in page
    assert f'data-body-url="/episodes/{seeded.running}/body"' in page


def test_episode_body_is_the_re_rendered_part_alone(browser_client: httpx.Client, seeded) -> None:
    """What the live view swaps in after each event (the browser twin is in test_browser)."""
    body = browser_client.get(f"/episodes/{seeded.completed}/body")
    assert body.status_code == 200
    html = body.text
    assert "<html" not in html and 'id="live"' not in html
    assert 'id="timeline"' in html and 'class="counters"' in html and "blue" in html
    assert browser_client.get("/episodes/ep-nope/body").status_code == 404


def test_dlq_ab_and_reference_pages(browser_client: httpx.Client, stack, seeded) -> None:
    entry = DeadLetterQueue(stack).add(
        DeadLetter(
            episode_id=seeded.dead,
            step=2,
            kind="seek",
            error="shown on the page <b>escaped</b>",
            attempts=3,
            last_checkpoint_id=None,
            policy="diffusion",
            budgets={},
            at=time.time(),
        )
    )
    dlq = browser_client.get("/dlq").text
    assert "Dead letters" in dlq
    row = dlq[dlq.index(f'<tr data-entry="{entry}">') :]
    row = row[: row.index("</tr>")]
    assert f'<a href="/episodes/{seeded.dead}">' in row
    assert "shown on the page &lt;b&gt;escaped&lt;/b&gt;" in row
    assert f'data-url="/api/dlq/{entry}/retry"' in row
    assert 'data-url="/api/dlq"' in dlq  # the purge button, shown when there are entries
    ab = browser_client.get("/ab").text
    assert seeded.eval_run in ab and 'data-metric="latency_mean_s"' in ab and "-29%" in ab
    assert "latency mean" in ab  # labelled, not the summary key
    assert f'href="/episodes?eval_run={seeded.eval_run}"' in ab  # the run links to its episodes
    assert 'data-policy="diffusion"' in ab
    ref = browser_client.get("/api-reference").text
    assert "/api/episodes/{episode_id}/events" in ref
    assert "/openapi.json" in ref
    docs = browser_client.get("/docs")  # no CDN-loaded Swagger UI: the local reference instead
    assert docs.status_code == 303 and docs.headers["location"] == "/api-reference"


def test_missing_episode_page_is_html(browser_client: httpx.Client) -> None:
    reply = browser_client.get("/episodes/ep-nope")
    assert reply.status_code == 404
    assert "text/html" in reply.headers["content-type"] and "ep-nope" in reply.text


def test_templates_escape_user_text(browser_client: httpx.Client, client: httpx.Client, stack):
    from dllmflow.store.episodes import EpisodeRepository

    episode = EpisodeRepository(stack).create(
        question="<script>alert(1)</script>", policy="ar", budgets={}
    )
    page = browser_client.get(f"/episodes/{episode.id}").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_live_view_events_reach_the_stream_in_order(client: httpx.Client, stack) -> None:
    # What the running episode page's live view reads (tests/api/test_browser.py renders it):
    # the refinement passes as published, then the finish and the end of the stream.
    episodes, progress = EpisodeRepository(stack), ProgressStream(stack)
    episode = episodes.create(question="Which pass wins?", policy="diffusion", budgets={})
    episodes.update(episode.id, status="running")
    progress.publish(episode.id, "started")
    passes = [("<think>░░ ░░</think>", 0.25), ("<think>Plan ░░</think>", 0.6)]
    for n, (text, committed) in enumerate(passes, 1):
        progress.publish(
            episode.id,
            "model_progress",
            step=0,
            role="planner",
            phase="refinement",
            backend="diffusion",
            text=text,
            committed_fraction=committed,
            refinement_passes=n,
        )
    episodes.update(episode.id, status="completed", answer="done")
    progress.publish(episode.id, "finished", status="completed", answer="done", sources=[])
    events = follow(client, episode.id, timeout=30)
    assert [e["event"] for e in events] == [
        "started",
        "model_progress",
        "model_progress",
        "finished",
        "end",
    ]
    shown = [events[i]["data"] for i in (1, 2)]
    assert [(d["text"], d["committed_fraction"], d["refinement_passes"]) for d in shown] == [
        (text, committed, n) for n, (text, committed) in enumerate(passes, 1)
    ]
    assert events[-1]["data"] == {"episode_id": episode.id, "status": "completed"}


def test_stack_and_audit_pages(browser_client: httpx.Client, client: httpx.Client, stack) -> None:
    """The stack page checks every component for real (the test stack is up: all healthy) and
    links to the Temporal UI and the Ray dashboard; the audit page lists writes newest first
    and filters by target."""
    page = browser_client.get("/stack")
    assert page.status_code == 200
    html = page.text
    for component in ("postgres", "redis", "temporal", "ray", "worker"):
        row = html[html.index(f'<tr data-component="{component}">') :]
        row = row[: row.index("</tr>")]
        assert ">yes<" in row, row
    assert f'href="{stack.temporal_ui_url}"' in html
    assert 'id="replicas"' in html
    missing = f"ep-{uuid.uuid4().hex[:12]}"
    assert client.post(f"/api/episodes/{missing}/cancel").status_code == 404
    audit = browser_client.get("/audit", params={"target": missing}).text
    rows = re.findall(r'<tr data-audit="(\d+)">', audit)
    assert len(rows) == 1 and "episode.cancel" in audit and missing in audit
    assert browser_client.get("/audit").text.count("<tr data-audit=") >= 1

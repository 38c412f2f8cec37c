"""The dashboard in a real headless Chromium: list -> episode page, waterfall and timeline
rendered; the live view renders diffusion refinement passes from SSE and reloads at the end.

Set DLLMFLOW_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the README's screenshot, and
DLLMFLOW_SCREENSHOTS=docs/screenshots to refresh the one of every page (docs/screenshots/).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetter, DeadLetterQueue, ProgressStream
from tests.api.browser import Browser, find_chromium
from tests.api.conftest import Seeded, _turn, follow, submit

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium binary on PATH (apt-get install chromium, or set DLLMFLOW_CHROMIUM)",
    ),
]

PAGE_FACTS = """(() => {
  const svg = document.getElementById('waterfall');
  const box = svg.getBoundingClientRect();
  const rects = [...svg.querySelectorAll('rect.seg')];
  const rows = [...document.querySelectorAll('#timeline tr.turn')];
  return {
    title: document.title,
    steps: svg.querySelectorAll('g.step').length,
    rects: rects.length,
    segments: [...new Set(rects.map(r => r.classList[1]))].sort(),
    widest: Math.max(...rects.map(r => r.getBoundingClientRect().width)),
    svgWidth: box.width,
    svgHeight: box.height,
    decodeFill: getComputedStyle(svg.querySelector('rect.seg-decode')).fill,
    roles: rows.map(r => r.children[1].textContent.trim()),
    actions: rows.map(r => r.querySelector('td.action code')?.textContent || null),
    results: rows.filter(r => r.querySelector('td.result .ok')).length,
    temporal: document.getElementById('temporal-link')?.href || null,
  };
})()"""


@pytest.fixture
def browser(tmp_path: Path):
    with Browser(CHROMIUM, tmp_path / "profile", width=1280, height=1000) as b:
        yield b


def test_dashboard_shows_an_episode_with_waterfall_and_timeline(
    browser: Browser, api_url: str, api_token: str, oracle_episode, client, tmp_path: Path
) -> None:
    browser.login(api_url, api_token, "/episodes")
    assert browser.evaluate("location.pathname + location.search") == "/episodes"
    link = f"a[href='/episodes/{oracle_episode.id}']"
    assert browser.evaluate(f"!!document.querySelector({json.dumps(link)})")

    browser.mark_page()
    browser.evaluate(f"document.querySelector({json.dumps(link)}).click()")
    browser.wait_for_new_page()
    assert browser.evaluate("location.pathname") == f"/episodes/{oracle_episode.id}"

    facts = browser.evaluate(PAGE_FACTS)
    episode = client.get(f"/api/episodes/{oracle_episode.id}").json()
    turns = episode["metrics"]["turns"]
    assert facts["steps"] == len(episode["metrics"]["waterfall"]) > 0
    assert facts["rects"] >= facts["steps"]
    assert {"decode", "orchestration", "tool"} <= {
        s.removeprefix("seg-") for s in facts["segments"]
    }
    assert facts["svgWidth"] > 800 and facts["svgHeight"] > 20 * facts["steps"]
    assert facts["widest"] > 10  # bars are drawn at a visible size
    assert facts["decodeFill"].startswith("rgb(")  # the stylesheet applied
    assert len(facts["roles"]) == turns
    assert facts["roles"][0] == "planner" and facts["roles"][-1] == "writer"
    assert facts["actions"][-1] == "answer"
    assert facts["results"] == episode["metrics"]["tool_calls"]
    assert facts["temporal"].endswith(f"/workflows/episode-{oracle_episode.id}")

    target = os.environ.get("DLLMFLOW_DASHBOARD_SCREENSHOT")
    shot = browser.screenshot(Path(target) if target else tmp_path / "dashboard.png", 1600)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_episode_list_shows_a_new_episode_without_reload(
    browser: Browser, api_url: str, api_token: str, stack
) -> None:
    browser.login(api_url, api_token, "/episodes")
    browser.mark_page()
    episode = EpisodeRepository(stack).create(question="Listed live?", policy="ar", budgets={})
    row = f"!!document.querySelector('#episodes tr[data-episode=\"{episode.id}\"]')"
    browser.wait_for(row, timeout=20)  # the list refreshes every 5 s
    assert browser.evaluate("window.__dllmflowOld === true")  # no reload happened


def test_live_view_renders_refinement_passes_and_stays_live(
    browser: Browser, api_url: str, api_token: str, stack
) -> None:
    episodes, progress = EpisodeRepository(stack), ProgressStream(stack)
    episode = episodes.create(question="Which pass wins?", policy="diffusion", budgets={})
    episodes.update(episode.id, status="running")
    progress.publish(episode.id, "started")
    passes = [
        ("<think>░░░░ ░░ ░░░░░</think>", 0.25),
        ("<think>Plan ░░ ░░░░░</think>", 0.6),
        ("<think>Plan to search</think>", 1.0),
    ]
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

    browser.login(api_url, api_token, f"/episodes/{episode.id}")
    text = browser.wait_for(
        "(t => t.includes('search') && t)(document.getElementById('refine-text').textContent)"
    )
    assert text == passes[-1][0]
    assert browser.evaluate("document.getElementById('refine-pass').textContent") == "3"
    assert browser.evaluate("document.getElementById('refine-fraction').textContent") == (
        "100% committed"
    )
    # What changed in the last pass is highlighted; what was already committed is not.
    marked = browser.evaluate(
        "[...document.querySelectorAll('#refine-text mark')].map(m => m.textContent).join('')"
    )
    assert marked.startswith("to") and "Plan" not in marked
    assert "episode started" in browser.evaluate("document.getElementById('live-log').textContent")

    # A finished turn: the timeline, counters and waterfall are re-rendered in place.
    browser.mark_page()
    assert browser.evaluate("document.querySelector('#timeline tr[data-step]')") is None
    CheckpointStore(stack).save(
        episode_id=episode.id,
        step=0,
        kind="plan",
        key=f"{episode.id}/0/plan",
        payload=_turn("Plan to search", "search", {"query": "pass"}, "diffusion", passes=3),
        role="planner",
        backend="diffusion",
        model="m",
        timings={"queue_s": 0.01, "decode_s": 0.4},
    )
    progress.publish(episode.id, "turn", step=0, role="planner", backend="diffusion", valid=True)
    browser.wait_for("!!document.querySelector('#timeline tr[data-step=\"0\"]')")
    counters = browser.evaluate("document.querySelector('.counters').textContent")
    assert "1 turns" in " ".join(counters.split())
    assert browser.evaluate("document.getElementById('waterfall-empty')") is None

    episodes.update(episode.id, status="completed", answer="done")
    progress.publish(episode.id, "finished", status="completed", answer="done", sources=[])
    browser.wait_for("document.getElementById('status').textContent === 'completed'", timeout=30)
    browser.wait_for("(a => a && a.textContent)(document.querySelector('.answer'))")
    assert browser.evaluate("document.querySelector('.answer').textContent") == "done"
    assert browser.evaluate("window.__dllmflowOld === true")  # no reload happened


def test_dlq_retry_button_calls_the_api_with_the_session(
    browser: Browser, api_url: str, api_token: str, stack, client
) -> None:
    # A stale entry of a finished episode: the API refuses the retry (409) and the page shows
    # the API's message (tests/api/test_dlq.py checks the same call without a browser).
    episodes = EpisodeRepository(stack)
    episode = episodes.create(question="Finished already?", policy="ar", budgets={})
    episodes.update(episode.id, status="completed", answer="yes")
    entry = DeadLetterQueue(stack).add(
        DeadLetter(
            episode_id=episode.id,
            step=1,
            kind="tool",
            error="tool kept failing",
            attempts=5,
            last_checkpoint_id=None,
            policy="ar",
            budgets={},
            at=time.time(),
        )
    )
    browser.login(api_url, api_token, "/dlq")
    turns = f"tr[data-entry='{entry}'] input[data-budget='max_turns']"
    browser.evaluate(f"document.querySelector({json.dumps(turns)}).value = '24'")
    button = f"tr[data-entry='{entry}'] button[data-action]"
    browser.evaluate(f"document.querySelector({json.dumps(button)}).click()")
    flash = browser.wait_for("(f => !f.hidden && f.textContent)(document.getElementById('flash'))")
    assert "already completed" in flash
    audit = client.get("/api/audit", params={"target": entry}).json()[0]
    assert (audit["action"], audit["via"], audit["outcome"]) == ("dlq.retry", "cookie", "error")
    assert audit["payload"]["budgets"] == {"max_turns": 24}  # the page's budget field was sent


def test_dlq_retry_with_a_larger_budget_completes_the_episode(
    browser: Browser, api_url: str, api_token: str, client, episode_worker, world_questions
) -> None:
    # A real budget failure: one denoising pass per turn cannot finish a diffusion turn.
    episode_id = submit(client, world_questions[1], "diffusion", max_denoise_steps=1)
    assert follow(client, episode_id)[-1]["data"]["status"] == "dead_lettered"
    entry = next(d["id"] for d in client.get("/api/dlq").json() if d["episode_id"] == episode_id)

    browser.login(api_url, api_token, "/dlq")
    row = f"tr[data-entry='{entry}']"
    steps = json.dumps(f"{row} input[data-budget='max_denoise_steps']")
    browser.evaluate(f"document.querySelector({steps}).value = '512'")
    browser.evaluate(f"document.querySelector({json.dumps(row + ' button[data-action]')}).click()")
    # The page opens the retried episode, whose badge follows it to the end.
    browser.wait_for(f"location.pathname === '/episodes/{episode_id}'", timeout=30)
    browser.wait_for("document.getElementById('status')?.textContent === 'completed'", timeout=120)
    done = client.get(f"/api/episodes/{episode_id}").json()
    assert done["status"] == "completed" and done["budgets"]["max_denoise_steps"] == 512
    audit = client.get("/api/audit", params={"target": entry}).json()[0]
    assert (audit["action"], audit["via"], audit["outcome"]) == ("dlq.retry", "cookie", "ok")


# Every page of the dashboard: (screenshot name, path, text its <h1> starts with).
PAGES = [
    ("episodes", "/episodes", "Episodes"),
    ("episode", "/episodes/{episode}", "{episode}"),
    ("dlq", "/dlq", "Dead letters"),
    ("audit", "/audit", "Audit log"),
    ("stack", "/stack", "Stack"),
    ("ab", "/ab", "A/B"),
    ("api-reference", "/api-reference", "dllmflow API"),
]


def test_every_page_renders_in_chromium(
    browser: Browser, api_url: str, api_token: str, oracle_episode, seeded: Seeded, tmp_path: Path
) -> None:
    """Each page loads in a real browser after login (no redirect, no error page, its stylesheet
    applied) and is captured; the A/B page shows the seeded comparison."""
    out = Path(os.environ.get("DLLMFLOW_SCREENSHOTS") or tmp_path / "screenshots")
    browser.login(api_url, api_token, "/episodes")
    for name, path, heading in PAGES:
        path, heading = (t.format(episode=oracle_episode.id) for t in (path, heading))
        browser.goto(f"{api_url}{path}")
        facts = browser.evaluate(
            "({path: location.pathname, h1: document.querySelector('h1')?.textContent.trim(),"
            " font: getComputedStyle(document.body).fontFamily,"
            " nav: !!document.querySelector('nav a')})"
        )
        assert facts["path"] == path, f"{path} redirected to {facts['path']}"
        assert facts["h1"] and facts["h1"].startswith(heading), (path, facts["h1"])
        assert facts["nav"] and facts["font"], f"{path}: the page's layout did not load"
        shot = browser.screenshot(out / f"{name}.png", 1400)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if name == "ab":
            assert browser.evaluate(f"document.body.textContent.includes('{seeded.eval_run}')")

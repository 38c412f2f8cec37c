"""Routing policies as pure functions."""

from __future__ import annotations

import pytest

from dllmflow.workers.serving.router import bucket, choose
from dllmflow.workers.serving.settings import ServingSettings


def test_routed_sends_silent_turns_to_diffusion() -> None:
    s = ServingSettings()
    assert {k: choose(k, "routed", "e1", s).primary for k in ("plan", "seek", "write", "chat")} == {
        "plan": "diffusion",
        "seek": "diffusion",
        "write": "ar",
        "chat": "ar",
    }
    assert choose("write", "diffusion", "e1", s).primary == "diffusion"
    assert choose("plan", "ar", "e1", s).primary == "ar"


@pytest.mark.parametrize("share", [0.5, 0.2])
def test_ab_split_is_stable_and_near_the_share(share: float) -> None:
    s = ServingSettings(ab_diffusion_share=share)
    ids = [f"episode-{i:04d}" for i in range(200)]
    arms = [choose("write", "ab", e, s).primary for e in ids]
    diffusion = arms.count("diffusion") / len(ids)
    assert abs(diffusion - share) <= 0.10
    # Deterministic per episode, and the same arm for every turn kind of that episode.
    assert arms == [choose("plan", "ab", e, s).primary for e in ids]


def test_shadow_serves_routed_and_shadows_the_other() -> None:
    everyone = ServingSettings(shadow_share=1.0)
    route = choose("plan", "shadow", "e1", everyone)
    assert (route.primary, route.shadow) == ("diffusion", "ar")
    nobody = ServingSettings(shadow_share=0.0)
    assert choose("write", "shadow", "e1", nobody).shadow is None
    half = ServingSettings(shadow_share=0.5)
    shadowed = sum(
        choose("chat", "shadow", f"e{i}", half).shadow == "diffusion" for i in range(200)
    )
    assert 80 <= shadowed <= 120


def test_bucket_is_uniform_enough_and_salted() -> None:
    assert 0 <= bucket("x", "ab") < 1
    assert bucket("x", "ab") != bucket("x", "shadow")
    n, bins = 4000, 10
    ab = [bucket(f"ep-{i}", "ab") for i in range(n)]
    assert all(0 <= b < 1 for b in ab)
    counts = [0] * bins
    for b in ab:
        counts[int(b * bins)] += 1
    # Each tenth holds 400 +- 60 (3 sigma is about 57) and the mean is 0.5 +- 0.015.
    assert all(340 <= c <= 460 for c in counts), counts
    assert abs(sum(ab) / n - 0.5) < 0.015
    # Salted: the shadow draw of an episode does not follow its A/B draw.
    shadow = [bucket(f"ep-{i}", "shadow") for i in range(n)]
    both_low = sum(a < 0.5 and s < 0.5 for a, s in zip(ab, shadow, strict=True))
    assert abs(both_low / n - 0.25) < 0.03


def test_unknown_policy_and_kind_are_named() -> None:
    s = ServingSettings()
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        choose("plan", "fastest", "e", s)
    with pytest.raises(ValueError, match="unknown turn kind 'think'"):
        choose("think", "routed", "e", s)

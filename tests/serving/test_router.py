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


def test_unknown_policy_and_kind_are_named() -> None:
    s = ServingSettings()
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        choose("plan", "fastest", "e", s)
    with pytest.raises(ValueError, match="unknown turn kind 'think'"):
        choose("think", "routed", "e", s)

"""The embedded Ray head needs the state dir's token: one that an older dllmflow started without
token authentication reports itself unhealthy, so `up` restarts it (stop, start: the branch
`stack.manager.up` takes for an unhealthy component) with token authentication on."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from dllmflow.config import load_settings
from dllmflow.stack.components import RayComponent
from dllmflow.stack.manager import ensure_state_dir
from tests.conftest import ray_without_token_auth, stack_env

pytestmark = pytest.mark.integration


def test_a_ray_head_without_token_auth_is_restarted_with_it(tmp_path, monkeypatch) -> None:
    env = stack_env(tmp_path / "state")
    settings = load_settings(**{k.removeprefix("DLLMFLOW_").lower(): v for k, v in env.items()})
    ensure_state_dir(settings)
    component = RayComponent(settings)
    with ray_without_token_auth(monkeypatch):
        record = component.start()
    try:
        version = f"{settings.effective_ray_dashboard_url}/api/version"
        with urllib.request.urlopen(version, timeout=5) as open_to_anyone:
            assert open_to_anyone.status == 200
        health = component.health()
        assert not health.healthy
        assert health.detail == "accepts calls without the token (started without token auth)"

        component.stop(record)
        record = component.start()

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(version, timeout=5)
        assert refused.value.code == 401
        assert component.health().healthy
    finally:
        component.stop(record)

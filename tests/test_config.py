from __future__ import annotations

import pytest

from dllmflow.config import SettingsError, load_settings, normalize_database_url


def test_unset_urls_mean_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for var in ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(f"DLLMFLOW_{var}", raising=False)
    s = load_settings(state_dir=tmp_path, postgres_port=5555, redis_port=6666)
    assert s.embedded("postgres") and s.embedded("redis") and s.embedded("ray")
    assert s.effective_database_url == "postgresql+psycopg://postgres@127.0.0.1:5555/dllmflow"
    assert s.effective_redis_url == "redis://127.0.0.1:6666/0"


def test_external_url_is_used_and_normalized(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLMFLOW_DATABASE_URL", "postgres://u:p@db.internal:5432/x")
    s = load_settings()
    assert not s.embedded("postgres")
    assert s.effective_database_url == "postgresql+psycopg://u:p@db.internal:5432/x"


def test_bad_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLMFLOW_REDIS_PORT", "70000")
    with pytest.raises(SettingsError, match="DLLMFLOW_REDIS_PORT"):
        load_settings()


def test_non_numeric_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLMFLOW_API_PORT", "eighty")
    with pytest.raises(SettingsError, match="DLLMFLOW_API_PORT"):
        load_settings()


def test_bad_database_scheme_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="DLLMFLOW_DATABASE_URL"):
        normalize_database_url("mysql://root@localhost/db")


def test_token_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Environment strings always validate as a token, so the token itself has to be the value
    # that fails: a non-string one (as from a .env-less caller or a typed override).
    monkeypatch.setenv("DLLMFLOW_API_PORT", "eighty")
    with pytest.raises(SettingsError) as info:
        load_settings(api_token={"token": "s3cret-token"}, redis_url=["redis://:hunter2@r:6379"])
    message = str(info.value)
    assert "DLLMFLOW_API_TOKEN" in message and "DLLMFLOW_REDIS_URL" in message
    assert "s3cret-token" not in message and "hunter2" not in message
    # Values of non-secret settings are still shown, so the redaction is per setting.
    assert "DLLMFLOW_API_PORT" in message and "'eighty'" in message

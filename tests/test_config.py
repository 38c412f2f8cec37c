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


def test_embedded_urls_carry_the_state_dirs_passwords(tmp_path) -> None:
    s = load_settings(state_dir=tmp_path, postgres_port=5555, redis_port=6666)
    s.postgres_password_file.write_text("pg-secret/+\n")
    s.redis_password_file.write_text("redis-secret\n")
    assert s.effective_database_url == (
        "postgresql+psycopg://postgres:pg-secret%2F%2B@127.0.0.1:5555/dllmflow"
    )
    assert s.effective_redis_url == "redis://:redis-secret@127.0.0.1:6666/0"


def test_external_urls_keep_their_own_credentials(tmp_path) -> None:
    s = load_settings(
        state_dir=tmp_path,
        database_url="postgresql://app:db-pw@db.internal/x",
        redis_url="redis://:r-pw@cache.internal:6379/1",
    )
    s.postgres_password_file.write_text("embedded\n")
    s.redis_password_file.write_text("embedded\n")
    assert s.effective_database_url == "postgresql+psycopg://app:db-pw@db.internal/x"
    assert s.effective_redis_url == "redis://:r-pw@cache.internal:6379/1"


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


def test_every_ray_port_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from dllmflow.stack.components import ray_node_ports

    for var in ("CLIENT_SERVER", "NODE_MANAGER", "DASHBOARD_AGENT_LISTEN", "MIN_WORKER"):
        monkeypatch.delenv(f"DLLMFLOW_RAY_{var}_PORT", raising=False)
    s = load_settings(ray_port=20000, ray_dashboard_port=20100)
    head = ray_node_ports(s)
    assert head == {
        "--port": 20000,
        "--dashboard-port": 20100,
        "--ray-client-server-port": 20001,
        "--node-manager-port": 20002,
        "--object-manager-port": 20003,
        "--runtime-env-agent-port": 20004,
        "--metrics-export-port": 20005,
        "--dashboard-agent-listen-port": 20006,
        "--dashboard-agent-grpc-port": 20007,
    }
    # Ray's fixed defaults (client server 10001, dashboard agent 52365) are never used.
    assert not {10001, 52365} & set(head.values())
    # A second node on the same host: the per-node ports, each one stride up; no head ports.
    second = ray_node_ports(s, 1)
    assert set(second) == set(head) - {"--port", "--dashboard-port", "--ray-client-server-port"}
    assert all(second[flag] == head[flag] + s.ray_node_port_stride for flag in second)
    assert not set(second.values()) & set(head.values())
    pinned = load_settings(ray_port=20000, ray_client_server_port=31001)
    assert ray_node_ports(pinned)["--ray-client-server-port"] == 31001


def test_ray_worker_port_range_needs_both_ends_in_order(monkeypatch) -> None:
    monkeypatch.setenv("DLLMFLOW_RAY_MIN_WORKER_PORT", "30000")
    with pytest.raises(SettingsError, match="set both DLLMFLOW_RAY_MIN_WORKER_PORT"):
        load_settings()
    monkeypatch.setenv("DLLMFLOW_RAY_MAX_WORKER_PORT", "20000")
    with pytest.raises(SettingsError, match=r"must not exceed .*\(30000 > 20000\)"):
        load_settings()

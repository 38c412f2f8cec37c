"""Connect this process to the configured Ray cluster (the embedded one unless configured)."""

from __future__ import annotations

import ipaddress
import os
import threading
from typing import Any

import ray

from dllmflow.stack.ray_loopback import keep_on_loopback

from .settings import NAMESPACE

_LOCK = threading.Lock()


def connect(settings: Any) -> None:
    """``ray.init`` once per process against ``settings.effective_ray_address``.

    Activities call this from many threads at once (32 model turns starting together): ray.init
    is not thread-safe (a second concurrent call fails "Perhaps you called ray.init twice"),
    so one thread connects while the others wait."""
    if ray.is_initialized():
        return
    with _LOCK:
        if not ray.is_initialized():
            _init(settings)


def _init(settings: Any) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if settings.embedded("ray"):
        _use_embedded_token(settings)
    if _loopback(settings.effective_ray_address):
        keep_on_loopback()  # else Ray dials the host's routable IP, where nothing listens
    try:
        ray.init(
            address=settings.effective_ray_address,
            namespace=NAMESPACE,
            ignore_reinit_error=True,
            log_to_driver=False,
        )
    except ConnectionError as exc:
        raise ConnectionError(
            f"cannot reach Ray at {settings.effective_ray_address} ({exc}); run `dllmflow up` "
            "or set DLLMFLOW_RAY_ADDRESS to a running cluster"
        ) from None


def _use_embedded_token(settings: Any) -> None:
    """Authenticate to the embedded cluster with the state dir's token (token auth is on)."""
    from ray._raylet import Config

    path = settings.ray_auth_token_file
    if not path.exists():
        raise ConnectionError(
            f"the embedded Ray cluster's token {path} is missing; run `dllmflow up` "
            "or set DLLMFLOW_RAY_ADDRESS to a running cluster"
        )
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    os.environ.pop("RAY_AUTH_TOKEN", None)  # another cluster's; it would win over the file
    Config.initialize("")  # Ray reads its auth mode once; make it see the one just set


def _loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

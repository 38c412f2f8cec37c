"""Keep the embedded Ray cluster on 127.0.0.1: `python -m dllmflow.stack.ray_loopback start ...`
runs `ray start` so that every Ray process binds loopback only.

Ray 2.60 turns a loopback `--node-ip-address` (and a loopback `--address` or `ray.init`
address) into the host's routable IP (`services.resolve_ip_for_localhost`); its GCS server,
raylet, agents and client server then bind that IP or every interface. Ray's one switch that
keeps loopback is its single-node mode for macOS/Windows, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
which `ray start` also takes as a reason to refuse joining a second node. So the Ray processes
get that mode through their environment (LOOPBACK_ENV), and `ray start` itself, and every
driver of the embedded cluster (workers.serving.connect), take this host's address to be
127.0.0.1 through `keep_on_loopback` instead.
"""

from __future__ import annotations

import sys

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def keep_on_loopback() -> None:
    """In this process, Ray's idea of this host's address is 127.0.0.1 (multi-node allowed)."""
    import ray
    from ray._private import ray_constants, services

    # Private names of Ray 2.60: a Ray that moved them would silently bind the host's IP again.
    needed = (
        (ray_constants, "ENABLE_RAY_CLUSTER"),
        (services, "get_localhost_ip"),
        (services, "node_ip_address_from_perspective"),
    )
    for module, name in needed:
        if not hasattr(module, name):
            raise RuntimeError(
                f"ray {ray.__version__}: {module.__name__}.{name} is gone; the embedded "
                "cluster cannot be kept on 127.0.0.1 (see dllmflow/stack/ray_loopback.py)"
            )
    ray_constants.ENABLE_RAY_CLUSTER = True
    services.node_ip_address_from_perspective = lambda address=None: services.get_localhost_ip()


def main() -> None:
    keep_on_loopback()
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()


if __name__ == "__main__":
    main()

# Sourced by the eval scripts: a private embedded stack on free ports under a temporary state
# dir, brought up now and torn down when the calling script exits.
state=$(mktemp -d)
eval "$(python - <<'PY'
import socket
names = ["POSTGRES", "REDIS", "TEMPORAL", "TEMPORAL_UI", "RAY", "RAY_DASHBOARD", "API"]
socks = [socket.socket() for _ in names]
for s in socks:
    s.bind(("127.0.0.1", 0))
for n, s in zip(names, socks):
    print(f"export DLLMFLOW_{n}_PORT={s.getsockname()[1]}")
PY
)"
export DLLMFLOW_STATE_DIR=$state
dllmflow up
trap 'dllmflow down; rm -rf "$state"' EXIT

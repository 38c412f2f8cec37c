#!/usr/bin/env bash
# Build llama-cpp-python[server] from source once and keep the wheels in a cache that .ci/run
# installs from (no compiler run in CI after the first time). ~41 min on 2 shared cores.
#   infra/llama_cpp/build_wheel.sh            # -> ${DLLMFLOW_WHEEL_CACHE:-~/.cache/dllmflow/wheels}
set -euo pipefail
cache=${DLLMFLOW_WHEEL_CACHE:-$HOME/.cache/dllmflow/wheels}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$cache"
if ls "$cache"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  echo "cached: $(ls "$cache"/llama_cpp_python-"$version"-*.whl)"
  exit 0
fi
# Only the library and the Python server: no examples, tests or command-line tools.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-1}
nice -n 19 python -m pip wheel "llama-cpp-python[server]==$version" -w "$cache"
ls -la "$cache"

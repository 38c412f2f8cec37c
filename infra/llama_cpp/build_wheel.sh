#!/usr/bin/env bash
# Build the llama-cpp-python wheel from source into infra/llama_cpp/wheels/, which .ci/run
# installs from (with its [server] extras from the package index): no compiler run in CI.
# ~5 min with 2 free cores (CMAKE_BUILD_PARALLEL_LEVEL=2), ~40 min niced on 1 busy core.
# GGML_NATIVE=OFF: the committed wheel must run on any x86-64 machine, not only the builder's.
#   infra/llama_cpp/build_wheel.sh            # -> ${DLLMFLOW_WHEEL_CACHE:-infra/llama_cpp/wheels}
set -euo pipefail
cache=${DLLMFLOW_WHEEL_CACHE:-$(dirname "$0")/wheels}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$cache"
if ls "$cache"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  echo "cached: $(ls "$cache"/llama_cpp_python-"$version"-*.whl)"
  exit 0
fi
# Only the library and the Python server: no examples, tests or command-line tools.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-1}
nice -n 19 python -m pip wheel --no-deps "llama-cpp-python==$version" -w "$cache"
ls -la "$cache"

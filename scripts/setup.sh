#!/usr/bin/env bash
# Set up AgentLM on a fresh Debian/Ubuntu machine: system packages, a virtual environment in .venv,
# and the project with its test tools. Safe to run again; it only installs what is missing.
#
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# bubblewrap: the shell sandbox; mmdebstrap: the OS tasks' image; mariadb-server: the database
# tasks' MySQL (its binaries only: the environment starts its own server, never the service);
# cmake, g++, ninja: building llama.cpp (the embedded engine) from llama-cpp-python's source;
# chromium: the browser tests' browser (Playwright drives it; `playwright install` cannot download);
# postgresql: the shared trajectory store's server for the `postgres` tests (each starts its own).
APT_PACKAGES=(bubblewrap mmdebstrap mariadb-server postgresql cmake g++ ninja-build chromium)
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: Python 3.11 or newer is needed (found $("$PYTHON" --version)); set PYTHON=/path/to/python3.11" >&2
    exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# Every install goes through constraints.txt: an unpinned torch (also one pulled in by another
# package, or by a package's isolated build) resolves to a multi-GB CUDA build.
export PIP_CONSTRAINT="$PWD/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip=(.venv/bin/python -m pip install -q)
# The stock pip 23 fails on some extras; torch first, because DeepSpeed's build imports it.
"${pip[@]}" --upgrade pip
.venv/bin/python -c 'import torch' 2>/dev/null || "${pip[@]}" torch==2.13.0
# llama.cpp, the embedded engine: llama-cpp-python ships only its source, so pip compiles it once
# (about 4 minutes on 2 cores; pip caches the wheel). For this machine's CPU (GGML_NATIVE), without
# the parts AgentLM does not use (multimodal, tools, examples, tests).
if ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    echo "setup: building llama.cpp (llama-cpp-python) for this CPU: about 4 minutes on 2 cores"
    started=$SECONDS
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF" \
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${pip[@]}" llama-cpp-python==0.3.36
    echo "setup: llama.cpp built in $((SECONDS - started)) s"
fi
"${pip[@]}" -e ".[test]"
# FastChat's conversation templates, the reference renderings AgentBench pinned (tests compare
# against them); without its heavy dependencies, which the templates do not need.
.venv/bin/python -c 'import fastchat' 2>/dev/null || "${pip[@]}" --no-deps fschat==0.2.31
echo "setup: ready (.venv)"

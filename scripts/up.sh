#!/usr/bin/env bash
# One command from a fresh clone to a running product: set up, then start the API (127.0.0.1:8000)
# and the Streamlit assistant (127.0.0.1:8501) on the embedded model. Extra arguments go to `agentlm up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/agentlm up "$@"

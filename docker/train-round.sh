#!/usr/bin/env bash
# One retraining round in the trainer container: `docker compose run --rm trainer [run.sh options]`.
# It starts from the checkpoint in service, $AGENTLM_HOME/runs/current (before the first promotion:
# the shipped default model, which is also what it is compared against), writes a new checkpoint
# under runs/, and repoints runs/current to it only if it is not worse (train/run.sh, steps 1-6).
# The trajectories come from AGENTLM_STORE_URL. Options given here come last, so they override
# these: --base-model, --output, --promote, or any other of `agentlm train --help`.
set -euo pipefail

runs=${AGENTLM_HOME:-/data}/runs
current=$runs/current
mkdir -p "$runs"
if [ -e "$current" ]; then
    start=(--base-model "$current")
else
    shipped=$(python -c 'from agentlm.serve.engines.weights import ensure_default_checkpoint as d; print(d())')
    start=(--base-model "$shipped" --previous "$shipped")
fi
exec agentlm train "${start[@]}" --output "$runs/$(date -u +%Y%m%dT%H%M%SZ)" --promote "$current" "$@"

#!/usr/bin/env bash
# Reproduce the shipped default model (models/agentlm-gemma-3-270m): a LoRA tune of the embedded
# Gemma 3 270M base, trained by the project's own commands, on the CPU:
#   1. assistant conversations over generated companies (data/assistant.py: none is the shipped
#      sample, so the held-out questions ask about people and rooms never trained on);
#   2. tool-calling conversations in the embedded format (data/toolcalls.py);
#   3. AgentBench-format DB tasks (dbgen) acted out by the scripted teacher, reward-1 only;
#   4. general chat from Python's documentation (pydocs), mixed at eta;
#   5. every agent file decontaminated (13-gram) against every evaluation set;
#   6. the SFT recipe with the gemma-270m-lora preset; the adapter is copied into models/.
#
#   bash train/default.sh --recipe [WORKDIR]   the shipped model: two rounds, the second continuing
#                                              the first's adapter (WORKDIR/round1, round2; about
#                                              55 min of training on 2 cores)
#   bash train/default.sh [WORKDIR]            one round with the sizes below (default runs/default)
#
# Steps whose output exists are skipped and training resumes from its last checkpoint, so a killed
# run continues where it stopped. Sizes: ASSISTANT=320 TOOLCALLS=80 DB=60 ETA=0.7 SEED=0 LR=0.0015.
# ONE_SHOT=fixed (the default) trains every assistant conversation with its profile's fixed worked
# example, which the SFT recipe then computes once per micro batch; ONE_SHOT=nearest shows each the
# example the server shows (its exemplar bank's nearest), as served, at about 2.5x the cost a step
# and several times the memory on 2 cores.
# FROM=DIR continues the PEFT adapter in DIR (an earlier run's <work>/model/adapter) instead of
# training new LoRA weights, so a second round on new data starts where the first ended.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--recipe" ]; then
    base=${2:-runs/default}
    # Round 1 teaches the protocols; round 2 adds the kinds round 1 lacked, on other generated
    # companies (SEED), continuing round 1's adapter.
    SEED=0 ASSISTANT=320 TOOLCALLS=80 DB=60 ETA=0.7 LR=0.0015 bash "$0" "$base/round1"
    SEED=1 ASSISTANT=260 TOOLCALLS=30 DB=10 ETA=0.85 LR=0.001 FROM="$base/round1/model/adapter" \
        bash "$0" "$base/round2"
    exit
fi

work=${1:-runs/default}
PY=${PYTHON:-.venv/bin/python}
ASSISTANT=${ASSISTANT:-320}
TOOLCALLS=${TOOLCALLS:-80}
DB=${DB:-60}
ETA=${ETA:-0.7}
SEED=${SEED:-0}
LR=${LR:-0.0015}
FROM=${FROM:-}
ONE_SHOT=${ONE_SHOT:-fixed}
SHARED=${AGENTBENCH:-../shared/agentbench}
OUT=models/agentlm-gemma-3-270m
mkdir -p "$work"
step() { echo "== $*"; }
have() { [ -s "$1" ]; }

BASE=$("$PY" -c 'from agentlm.serve.engines.weights import ensure_embedded_checkpoint as e; print(e())')

step "0. exemplar banks (each run's 1-shot is the nearest worked example; agent/exemplars.py)"
"$PY" -m agentlm.data.assistant --bank --out agent/profiles --worlds 4 --per-world 150 \
    --eval benchmarks/heldout/assistant_questions.jsonl benchmarks/heldout/tool_calls.jsonl \
    $([ -f "$SHARED/dbbench_dev.jsonl" ] && echo "$SHARED/dbbench_dev.jsonl")

step "1-4. data"
have "$work/assistant.jsonl" || "$PY" -m agentlm.data.assistant --out "$work/assistant.jsonl" --worlds 10 --per-world 100 --seed "$SEED" \
    --one-shot "$ONE_SHOT"
have "$work/toolcalls.jsonl" || "$PY" -m agentlm.data.toolcalls --out "$work/toolcalls.jsonl" --examples 400 --seed "$SEED"
have "$work/db_tasks.jsonl" || "$PY" -m agentlm.data.dbgen --domains train --tasks 300 --seed "$SEED" --out "$work/db_tasks.jsonl"
have "$work/db_collected.jsonl" || "$PY" -m agentlm.data.collect --tasks "$work/db_tasks.jsonl" \
    --out "$work/db_collected.jsonl" --teacher scripted
have "$work/general.jsonl" || "$PY" -m agentlm.data.pydocs --out "$work/general.jsonl" --seed "$SEED"

step "5. decontamination against every evaluation set"
evals=(benchmarks/heldout/assistant_questions.jsonl benchmarks/heldout/tool_calls.jsonl)
[ -f "$SHARED/dbbench_dev.jsonl" ] && evals+=("$SHARED/dbbench_dev.jsonl")
for name in assistant toolcalls db_collected; do
    have "$work/$name.clean.jsonl" || "$PY" -m agentlm.data.decontaminate --train "$work/$name.jsonl" \
        --eval "${evals[@]}" --out "$work/$name.clean.jsonl" | tee "$work/$name.decontaminate.txt"
done

step "6. mix (eta = $ETA) and train"
if ! have "$work/agent.jsonl"; then
    "$PY" - "$work" "$ASSISTANT" "$TOOLCALLS" "$DB" "$SEED" <<'PYEOF'
import random, sys
from pathlib import Path
work, sizes, seed = Path(sys.argv[1]), [int(n) for n in sys.argv[2:5]], int(sys.argv[5])
rng = random.Random(seed)
lines = []
for name, n in zip(("assistant", "toolcalls", "db_collected"), sizes):
    pool = (work / f"{name}.clean.jsonl").read_text().splitlines()
    lines += rng.sample(pool, min(n, len(pool)))  # spread over every generated world
(work / "agent.jsonl").write_text("\n".join(lines) + "\n")
PYEOF
fi
have "$work/mix.jsonl" || "$PY" -m agentlm.data.mix --agent "$work/agent.jsonl" --general "$work/general.jsonl" \
    --eta "$ETA" --seed "$SEED" --out "$work/mix.jsonl" | tee "$work/mix.txt"
if ! have "$work/model/adapter/adapter_model.safetensors"; then
    "$PY" -m agentlm.train.sft --config gemma-270m-lora --data "$work/mix.jsonl" --base-model "$BASE" \
        --output-dir "$work/model" --eta "$ETA" --mix-report "$work/mix.txt" --set lr="$LR" \
        ${FROM:+init_adapter="$FROM"} 2>&1 \
        | grep --line-buffered -v "it/s\]" | tee -a "$work/train.log"
fi

step "7. the adapter into $OUT"
mkdir -p "$OUT"
cp "$work/model/adapter/adapter_model.safetensors" "$OUT/"
# The adapter names its base by where it was on this machine; the shipped one names the model.
"$PY" - "$work/model/adapter/adapter_config.json" "$OUT/adapter_config.json" <<'PYEOF'
import json, sys
config = json.loads(open(sys.argv[1]).read())
config["base_model_name_or_path"] = "google/gemma-3-270m"
open(sys.argv[2], "w").write(json.dumps(config, indent=2, sort_keys=True) + "\n")
PYEOF
echo "adapter: $(du -h "$OUT/adapter_model.safetensors" | cut -f1) in $OUT"

#!/usr/bin/env bash
# The AgentTuning experiment in miniature, offline, on the CPU (docs/results.md reports a run):
#   1. generate DB tasks: training domains, held-in (same domains, new tasks), held-out (new domain);
#   2. collect trajectories with the scripted teacher (reward-1 runs only), decontaminate them
#      against the held-out set;
#   3. general chat from Python's documentation (data/pydocs.py: no hub here);
#   4. mix at eta = 0.2 and tune Gemma 3 270M (the `gemma-270m` preset) for one epoch;
#   5. ablation on a smaller, equal budget: eta in {0, 0.2, 1} and eta = 0.2 with the `loss` flag ignored;
#   6. evaluate the base model and every tuned one: held-out and held-in DB success, general
#      multiple choice and held-out chat perplexity.
#
#   bash train/experiment.sh [WORKDIR]        (default runs/experiment; about 1.5 h on 2 cores)
#
# Steps whose output exists are skipped, so a killed run continues where it stopped.
# Sizes can be changed through the environment: AGENT=120 ABLATION_STEPS=12 EVAL_TASKS=30 ...
set -euo pipefail

work=${1:-runs/experiment}
PY=${PYTHON:-python}
BASE=${BASE:-${AGENTLM_HOME:-$HOME/.agentlm}/models/gemma-3-270m}  # written by `agentlm serve` on first start
AGENT=${AGENT:-120}                    # agent trajectories in the training set
ABLATION_STEPS=${ABLATION_STEPS:-12}   # optimizer steps per ablation row (about 4k tokens each)
EVAL_TASKS=${EVAL_TASKS:-30}           # tasks per evaluation set
EVAL=(--max-tokens 128 --max-rounds 5 --parallel 8 --runs "$work/runs")  # per reply; turns per task; every run kept
mkdir -p "$work"
step() { echo "== $*"; }
have() { [ -s "$1" ]; }

[ -f "$BASE/config.json" ] || "$PY" -c 'from agentlm.serve.engines.weights import ensure_embedded_checkpoint as e; e()'

step "1. DB tasks (verified: each gold SQL passes the environment's own check)"
have "$work/train_tasks.jsonl" || "$PY" -m agentlm.data.dbgen --domains train --tasks 300 --seed 0 --out "$work/train_tasks.jsonl"
have "$work/heldin.jsonl" || "$PY" -m agentlm.data.dbgen --domains train --tasks "$EVAL_TASKS" --seed 2 --out "$work/heldin.jsonl"
have "$work/heldout.jsonl" || "$PY" -m agentlm.data.dbgen --domains heldout --tasks "$EVAL_TASKS" --seed 1 --out "$work/heldout.jsonl"

step "2. trajectories from the scripted teacher, decontaminated against the held-out tasks"
have "$work/collected.jsonl" || "$PY" -m agentlm.data.collect --tasks "$work/train_tasks.jsonl" \
    --out "$work/collected.jsonl" --teacher scripted  # one worker: a fixed order
have "$work/clean.jsonl" || "$PY" -m agentlm.data.decontaminate --train "$work/collected.jsonl" \
    --eval "$work/heldout.jsonl" --out "$work/clean.jsonl" | tee "$work/decontaminate.txt"
# (Held-in tasks share the training tables' domains and wording by design, as the paper's held-in
# tasks shared their environments: against them every training task would count as overlapping.)
head -n "$AGENT" "$work/clean.jsonl" > "$work/agent.jsonl"

step "3. general chat"
have "$work/general.jsonl" || "$PY" -m agentlm.data.pydocs --out "$work/general.jsonl" --seed 0

train() {  # NAME ETA [sft options...]
    local name=$1 eta=$2; shift 2
    have "$work/$name/model.safetensors" && return
    "$PY" -m agentlm.data.mix --agent "$work/agent.jsonl" --general "$work/general.jsonl" --eta "$eta" \
        --seed 0 --out "$work/$name.mix.jsonl" | tee "$work/$name.mix.txt"
    "$PY" -m agentlm.train.sft --config gemma-270m --data "$work/$name.mix.jsonl" --base-model "$BASE" \
        --output-dir "$work/$name" --eta "$eta" --mix-report "$work/$name.mix.txt" "$@" 2>&1 \
        | grep --line-buffered -v "it/s\]" | tee "$work/$name.train.log"
}

step "4. the main run: eta = 0.2, one epoch"
train main 0.2 --set epochs=1

step "5. ablation: $ABLATION_STEPS steps each"
train eta0 0 --max-steps "$ABLATION_STEPS"
train eta0.2 0.2 --max-steps "$ABLATION_STEPS"
train eta1 1 --max-steps "$ABLATION_STEPS"
train eta0.2-noflag 0.2 --max-steps "$ABLATION_STEPS" --set honour_loss_flag=false

step "6. evaluation"
evaluate() {  # NAME TASK_FILES... : one row per model
    local name=$1; shift
    have "$work/eval-$name.json" && return
    local tasks=()
    for t in "$@"; do tasks+=(--tasks "$t"); done
    "$PY" -m agentlm.train.eval --model "$([ "$name" = base ] && echo embedded-base || echo "$work/$name")" \
        "${tasks[@]}" "${EVAL[@]}" --json "$work/eval-$name.json"
}
evaluate base "$work/heldout.jsonl" "$work/heldin.jsonl"
evaluate main "$work/heldout.jsonl" "$work/heldin.jsonl"
for name in eta0 eta0.2 eta1 eta0.2-noflag; do evaluate "$name" "$work/heldout.jsonl"; done

"$PY" - "$work" <<'EOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
def row(name):
    r = json.loads((work / f"eval-{name}.json").read_text())[0]
    cells = [f"{100 * r['tasks'][t]:.1f}" if t in r["tasks"] else "–" for t in ("heldout", "heldin")]
    return f"| {name} | {' | '.join(cells)} | {100 * r['mc_accuracy']:.1f} | {r['perplexity']:.2f} |"
head = "| model | held-out DB success % | held-in DB success % | general MC % | chat perplexity |\n|---|---|---|---|---|"
out = ["## Base vs. tuned (eta = 0.2)", "", head, row("base"), row("main"), "",
       "## Ablation (equal budget)", "", head, row("base"), *(row(n) for n in ("eta0", "eta0.2", "eta1", "eta0.2-noflag"))]
(work / "results.md").write_text("\n".join(out) + "\n")
print("\n".join(out))

from agentlm.train.eval import EvalRow, plot
names = ("base", "main", "eta0", "eta0.2", "eta1", "eta0.2-noflag")
rows = [EvalRow(**json.loads((work / f"eval-{n}.json").read_text())[0]) for n in names]
for name, r in zip(names, rows):
    r.model = name
print(f"plot: {plot(rows, work / 'results.png')}")
EOF

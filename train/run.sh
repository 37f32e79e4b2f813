#!/usr/bin/env bash
# Retrain from what users produced, in one command:
#   1. export logged trajectories (liked or reward-1 runs) from the server's store,
#   2. mix them and the bundled HR trajectories with general chat at eta,
#   3. fine-tune with DeepSpeed (ZeRO-2; gloo on the CPU), loss on assistant turns only,
#   4. write a Hugging Face checkpoint that `agentlm serve --model DIR` (and vLLM) load as is.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: train/run.sh --base-model DIR_OR_ID --output DIR [options]

  --base-model M     checkpoint to start from (directory or hub id)                 (required)
  --output DIR       where the new checkpoint goes                                   (required)
  --preset NAME      train/configs/NAME.yaml: tiny | gemma-270m                      (default: tiny)
  --eta X            agent share of training examples                                (default: 0.2)
  --store PATH       trajectory store to export from   (default: $AGENTLM_HOME/trajectories.sqlite3)
  --agent-data FILE  more agent trajectories (AgentInstruct JSONL); repeatable
  --general-data F   general chat (ShareGPT JSONL); repeatable  (default: Python's docs, data/pydocs.py)
  --workdir DIR      intermediate files                                              (default: OUTPUT.work)
  --seed N           mixing and training seed                                        (default: 0)
  --max-steps N      override the preset's optimizer steps
  --num-gpus N       GPUs per node: train through the `deepspeed` launcher          (default: 1 process)
  --hostfile FILE    multi-node: DeepSpeed hostfile ("host slots=N" per line); implies the launcher
  --num-nodes N      nodes to use from the hostfile                                  (default: all)
  --dry-run          print the training command instead of running it (after export and mix)
  -h, --help         this text
USAGE
}

die() { echo "train/run.sh: $*" >&2; exit 2; }

PYTHON=${PYTHON:-python}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base_model="" output="" preset="tiny" eta="0.2" seed="0" max_steps="" workdir=""
num_gpus="" hostfile="" num_nodes="" dry_run=0
store="${AGENTLM_HOME:-$HOME/.agentlm}/trajectories.sqlite3"
agent_data=() general_data=()
while (($#)); do
    case "$1" in
        --base-model) base_model=${2:?--base-model needs a value}; shift 2 ;;
        --output) output=${2:?--output needs a value}; shift 2 ;;
        --preset) preset=${2:?--preset needs a value}; shift 2 ;;
        --eta) eta=${2:?--eta needs a value}; shift 2 ;;
        --store) store=${2:?--store needs a value}; shift 2 ;;
        --agent-data) agent_data+=("${2:?--agent-data needs a file}"); shift 2 ;;
        --general-data) general_data+=("${2:?--general-data needs a file}"); shift 2 ;;
        --workdir) workdir=${2:?--workdir needs a value}; shift 2 ;;
        --seed) seed=${2:?--seed needs a value}; shift 2 ;;
        --max-steps) max_steps=${2:?--max-steps needs a value}; shift 2 ;;
        --num-gpus) num_gpus=${2:?--num-gpus needs a value}; shift 2 ;;
        --hostfile) hostfile=${2:?--hostfile needs a file}; shift 2 ;;
        --num-nodes) num_nodes=${2:?--num-nodes needs a value}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
[ -n "$base_model" ] || { usage >&2; die "--base-model is required"; }
[ -n "$output" ] || { usage >&2; die "--output is required"; }
[ -f "$here/configs/$preset.yaml" ] || [ -f "$preset" ] || die "no preset '$preset' (see $here/configs/)"
[ -z "$hostfile" ] || [ -f "$hostfile" ] || die "no hostfile at $hostfile"
workdir=${workdir:-$output.work}
mkdir -p "$workdir"
bundled=$("$PYTHON" -c 'from importlib import resources; print(resources.files("agentlm.data") / "bundled")')

echo "== 1/3 export logged trajectories"
agent_files=("$bundled/hr_trajectories.jsonl" "${agent_data[@]}")
if [ -f "$store" ]; then
    "$PYTHON" -m agentlm.cli data export --store "$store" --out "$workdir/exported.jsonl"
    agent_files+=("$workdir/exported.jsonl")
else
    echo "no trajectory store at $store yet: training on the bundled and given data only"
fi

echo "== 2/3 mix agent data with general chat at eta=$eta"
if ! ((${#general_data[@]})); then  # offline default; the bundled general chat is kept for evaluation
    "$PYTHON" -m agentlm.data.pydocs --out "$workdir/general.jsonl" --seed "$seed"
    general_data=("$workdir/general.jsonl")
fi
"$PYTHON" -m agentlm.data.mix --agent "${agent_files[@]}" --general "${general_data[@]}" \
    --eta "$eta" --seed "$seed" --out "$workdir/train.jsonl" | tee "$workdir/mix_report.txt"

echo "== 3/3 fine-tune ($preset preset)"
extra=()
[ -z "$max_steps" ] || extra+=(--max-steps "$max_steps")
sft_args=(--config "$preset" --data "$workdir/train.jsonl" --base-model "$base_model" --output-dir "$output"
    --eta "$eta" --seed "$seed" --mix-report "$workdir/mix_report.txt" "${extra[@]}")
if [ -n "$num_gpus$hostfile" ]; then
    # The DeepSpeed launcher starts one process per GPU (on every host of the hostfile, over ssh/pdsh);
    # each joins the same NCCL group, and rank 0 writes the checkpoint.
    launcher=(deepspeed)
    [ -z "$hostfile" ] || launcher+=(--hostfile "$hostfile")
    [ -z "$num_nodes" ] || launcher+=(--num_nodes "$num_nodes")
    [ -z "$num_gpus" ] || launcher+=(--num_gpus "$num_gpus")
    train_cmd=("${launcher[@]}" --module agentlm.train.sft "${sft_args[@]}")
else
    train_cmd=("$PYTHON" -m agentlm.train.sft "${sft_args[@]}")
fi
if ((dry_run)); then
    printf '%q ' "${train_cmd[@]}"; echo
    exit 0
fi
"${train_cmd[@]}"

echo "checkpoint: $output  (serve it with: agentlm serve --model $output)"

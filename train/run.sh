#!/usr/bin/env bash
# Retrain from what users produced, in one command:
#   1. export logged trajectories (liked or reward-1 runs, with users' corrections) from the server's store,
#   2. collect teacher trajectories over task files (--collect), or reuse what an earlier run collected,
#   3. mix them and the bundled HR trajectories with general chat at eta,
#   4. fine-tune with DeepSpeed (ZeRO-2; gloo on the CPU), loss on assistant turns only, and write a
#      Hugging Face checkpoint that `agentlm serve --model DIR` (and vLLM) load as is,
#   5. with --preference, tune on what users said (train/preference.py): KTO on thumbs up/down,
#      DPO on corrections against the model's reply; with --no-sft, this stage alone, from the base,
#   6. evaluate it against the checkpoint in service and promote it (repoint a symlink) only if it is
#      not worse: agent success not lower, general MC and perplexity within tolerance (train/promote.py).
#
#   bash train/run.sh --base-model runs/current --output runs/$(date +%F) --collect db_tasks.jsonl \
#       --eval-tasks heldout.jsonl --promote runs/current
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: train/run.sh --base-model DIR_OR_ID --output DIR [options]

  --base-model M     checkpoint to start from (directory or hub id)                 (required)
  --output DIR       where the new checkpoint goes                                   (required)
  --preset NAME      train/configs/NAME.yaml: tiny | gemma-270m                      (default: tiny)
  --eta X            agent share of training examples                                (default: 0.2)
  --store PATH|URL   trajectory store to export from: a SQLite file or a postgresql:// URL
                     (default: $AGENTLM_STORE_URL, else $AGENTLM_HOME/trajectories.sqlite3)
  --agent-data FILE  more agent trajectories (AgentInstruct JSONL); repeatable
  --general-data F   general chat (ShareGPT JSONL); repeatable  (default: Python's docs, data/pydocs.py)
  --collect FILE     task file (AgentBench DB JSONL / OS JSON, or `agentlm.data.dbgen` output) to collect
                     teacher trajectories over, into WORKDIR/collected-STEM.jsonl; a rerun reuses them
                     (tasks already collected are skipped); repeatable
  --teacher T        scripted, or a model id served at --teacher-url                 (default: scripted)
  --teacher-url URL  the teacher's OpenAI-compatible endpoint
  --teacher-key KEY  its API key
  --workdir DIR      intermediate files                                              (default: OUTPUT.work)
  --seed N           mixing and training seed                                        (default: 0)
  --max-steps N      override the preset's optimizer steps
  --num-gpus N       GPUs per node: train through the `deepspeed` launcher          (default: 1 process)
  --hostfile FILE    multi-node: DeepSpeed hostfile ("host slots=N" per line); implies the launcher
  --num-nodes N      nodes to use from the hostfile                                  (default: all)
  --previous DIR     the checkpoint in service, to evaluate the new one against (default: --promote's target)
  --eval-tasks FILE  agent task file (DB/OS) both are scored on; repeatable
  --eval-limit N     at most N tasks per file                                        (default: all)
  --eval-max-tokens N   per model reply in agent tasks                               (default: 256)
  --eval-max-rounds N   model turns per task                        (default: the environment's, 15 for DB)
  --eval-parallel N  agent tasks run at once                                         (default: 8)
  --no-general       compare on agent tasks only: no general multiple choice or perplexity
  --tolerance P      general MC accuracy points the new checkpoint may lose          (default: 2)
  --promote LINK     symlink to the checkpoint in service: repointed to the new one only if it is not
                     worse (with no previous checkpoint at all, it is); the decision: WORKDIR/promotion.json
  --preference       add the preference stage: the store's feedback (agentlm data preferences) and any
                     --preference-data, KTO on thumbs and DPO on corrections, after SFT
  --no-sft           the preference stage alone, from --base-model (steps 1-4 skipped)
  --preference-data F  more preference records (data/preferences.py's format); repeatable
  --preference-lr X  the preference stage's learning rate                             (default: 5e-5)
  --beta X           how far the preference stage may move from where it starts        (default: 0.1)
  --preference-steps N  its optimizer steps                                   (default: one epoch)
  --set KEY=VALUE    a training setting for both recipes (train/configs/*.yaml keys); repeatable,
                     e.g. --set init_adapter=models/agentlm-gemma-3-270m
  --dry-run          print the training command instead of running it (after export, collection and mix)
  -h, --help         this text
USAGE
}

die() { echo "train/run.sh: $*" >&2; exit 2; }

PYTHON=${PYTHON:-python}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base_model="" output="" preset="tiny" eta="0.2" seed="0" max_steps="" workdir=""
num_gpus="" hostfile="" num_nodes="" dry_run=0
teacher="scripted" teacher_url="" teacher_key="" previous="" promote="" tolerance="2" general=1
store="${AGENTLM_STORE_URL:-${AGENTLM_STORE:-${AGENTLM_HOME:-$HOME/.agentlm}/trajectories.sqlite3}}"
agent_data=() general_data=() collect=() eval_tasks=() eval_opts=()
preference=0 sft=1 preference_data=() preference_lr="5e-5" beta="0.1" preference_steps="" sets=()
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
        --collect) collect+=("${2:?--collect needs a task file}"); shift 2 ;;
        --teacher) teacher=${2:?--teacher needs a value}; shift 2 ;;
        --teacher-url) teacher_url=${2:?--teacher-url needs a value}; shift 2 ;;
        --teacher-key) teacher_key=${2:?--teacher-key needs a value}; shift 2 ;;
        --previous) previous=${2:?--previous needs a checkpoint}; shift 2 ;;
        --eval-tasks) eval_tasks+=("${2:?--eval-tasks needs a task file}"); shift 2 ;;
        --eval-limit|--eval-max-tokens|--eval-max-rounds|--eval-parallel)
            eval_opts+=("--${1#--eval-}" "${2:?$1 needs a value}"); shift 2 ;;
        --no-general) general=0; shift ;;
        --tolerance) tolerance=${2:?--tolerance needs a value}; shift 2 ;;
        --promote) promote=${2:?--promote needs a link path}; shift 2 ;;
        --preference) preference=1; shift ;;
        --no-sft) sft=0; preference=1; shift ;;
        --preference-data) preference_data+=("${2:?--preference-data needs a file}"); shift 2 ;;
        --preference-lr) preference_lr=${2:?--preference-lr needs a value}; shift 2 ;;
        --beta) beta=${2:?--beta needs a value}; shift 2 ;;
        --preference-steps) preference_steps=${2:?--preference-steps needs a value}; shift 2 ;;
        --set) sets+=(--set "${2:?--set needs KEY=VALUE}"); shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
[ -n "$base_model" ] || { usage >&2; die "--base-model is required"; }
[ -n "$output" ] || { usage >&2; die "--output is required"; }
[ -f "$here/configs/$preset.yaml" ] || [ -f "$preset" ] || die "no preset '$preset' (see $here/configs/)"
[ -z "$hostfile" ] || [ -f "$hostfile" ] || die "no hostfile at $hostfile"
unique_stems() {  # OPTION FILE...: a task file's stem names its outputs, so no two may share one
    local option=$1 f stem; local -A seen=(); shift
    for f in "$@"; do
        [ -f "$f" ] || die "no $option file at $f"
        stem=$(basename "$f"); stem=${stem%.*}
        [ -z "${seen[$stem]:-}" ] || die "$option: $f and ${seen[$stem]} share the name '$stem'"
        seen[$stem]=$f
    done
}
for f in "${preference_data[@]}"; do [ -f "$f" ] || die "no --preference-data file at $f"; done
unique_stems --collect "${collect[@]}"
unique_stems --eval-tasks "${eval_tasks[@]}"
[ "$teacher" = scripted ] || [ -n "$teacher_url" ] || die "--teacher $teacher needs --teacher-url (its endpoint)"
if [ -n "$promote" ] && [ -z "$previous" ]; then  # the checkpoint in service is the link's target
    [ ! -e "$promote" ] || [ -L "$promote" ] || die "--promote $promote exists and is not a symlink"
    if [ -L "$promote" ]; then
        previous=$(readlink -m -- "$promote")
        [ -e "$previous" ] || die "$promote points at $previous, which is missing: pass --previous or remove the link"
    fi
fi
if [ -n "$previous" ]; then
    [ -e "$previous" ] || die "no previous checkpoint at $previous"
    [ "$(readlink -m -- "$previous")" != "$(readlink -m -- "$output")" ] \
        || die "--output $output is the checkpoint in service: write the new one elsewhere"
    ((${#eval_tasks[@]} || general)) || die "nothing to compare on: give --eval-tasks or drop --no-general"
fi
workdir=${workdir:-$output.work}
mkdir -p "$workdir"
bundled=$("$PYTHON" -c 'from importlib import resources; print(resources.files("agentlm.data") / "bundled")')

# The DeepSpeed launcher starts one process per GPU (on every host of the hostfile, over ssh/pdsh);
# each joins the same NCCL group, and rank 0 writes the checkpoint.
launcher=()
if [ -n "$num_gpus$hostfile" ]; then
    launcher=(deepspeed)
    [ -z "$hostfile" ] || launcher+=(--hostfile "$hostfile")
    [ -z "$num_nodes" ] || launcher+=(--num_nodes "$num_nodes")
    [ -z "$num_gpus" ] || launcher+=(--num_gpus "$num_gpus")
fi
recipe() {  # MODULE ARGS...: a training recipe, through the launcher when there is one
    if ((${#launcher[@]})); then
        train_cmd=("${launcher[@]}" --module "$@")
    else
        train_cmd=("$PYTHON" -m "$@")
    fi
}
# A shared store (a URL) must answer: a round that cannot read it fails instead of training without it.
has_store() { [[ "$store" == postgres://* || "$store" == postgresql://* || -f "$store" ]]; }
sft_output=$output
((preference && sft)) && sft_output="$workdir/sft"  # the preference stage starts from it
commands=()

if ((sft)); then
echo "== 1/6 export logged trajectories"
agent_files=("$bundled/hr_trajectories.jsonl" "${agent_data[@]}")
if has_store; then
    "$PYTHON" -m agentlm.cli data export --store "$store" --out "$workdir/exported.jsonl"
    agent_files+=("$workdir/exported.jsonl")
else
    echo "no trajectory store at $store yet: training on the bundled and given data only"
fi

echo "== 2/6 collect teacher trajectories ($teacher teacher)"
teacher_opts=(--teacher "$teacher")
[ -z "$teacher_url" ] || teacher_opts+=(--base-url "$teacher_url")
[ -z "$teacher_key" ] || teacher_opts+=(--api-key "$teacher_key")
((${#collect[@]})) || echo "no --collect task files: none to collect"
for tasks in "${collect[@]}"; do  # resumable: tasks already in the output are skipped, so a rerun reuses them
    stem=$(basename "$tasks"); collected="$workdir/collected-${stem%.*}.jsonl"
    "$PYTHON" -m agentlm.data.collect --tasks "$tasks" --out "$collected" "${teacher_opts[@]}"
    if [ -s "$collected" ]; then
        agent_files+=("$collected")
    else
        echo "no trajectory from $tasks reached the reward threshold: nothing to add from it"
    fi
done

echo "== 3/6 mix agent data with general chat at eta=$eta"
if ! ((${#general_data[@]})); then  # offline default; the bundled general chat is kept for evaluation
    "$PYTHON" -m agentlm.data.pydocs --out "$workdir/general.jsonl" --seed "$seed"
    general_data=("$workdir/general.jsonl")
fi
"$PYTHON" -m agentlm.data.mix --agent "${agent_files[@]}" --general "${general_data[@]}" \
    --eta "$eta" --seed "$seed" --out "$workdir/train.jsonl" | tee "$workdir/mix_report.txt"

echo "== 4/6 fine-tune ($preset preset)"
extra=()
[ -z "$max_steps" ] || extra+=(--max-steps "$max_steps")
recipe agentlm.train.sft --config "$preset" --data "$workdir/train.jsonl" --base-model "$base_model" \
    --output-dir "$sft_output" --eta "$eta" --seed "$seed" --mix-report "$workdir/mix_report.txt" \
    "${extra[@]}" "${sets[@]}"
if ((dry_run)); then
    commands+=("$(printf '%q ' "${train_cmd[@]}")")
else
    "${train_cmd[@]}"
    echo "checkpoint: $sft_output  (serve it with: agentlm serve --model $sft_output)"
fi
fi

if ((preference)); then
echo "== 5/6 preference tuning: KTO on thumbs, DPO on corrections (beta=$beta)"
preference_files=("${preference_data[@]}")
if has_store; then
    "$PYTHON" -m agentlm.cli data preferences --store "$store" --out "$workdir/preferences.jsonl"
    [ ! -s "$workdir/preferences.jsonl" ] || preference_files+=("$workdir/preferences.jsonl")
else
    echo "no trajectory store at $store: only the given --preference-data"
fi
((${#preference_files[@]})) || die "no feedback to learn from: rate runs in the UI, or give --preference-data"
from=$base_model
((sft)) && from=$sft_output
steps=()
[ -z "$preference_steps" ] || steps+=(--max-steps "$preference_steps")
data_opts=()
for f in "${preference_files[@]}"; do data_opts+=(--data "$f"); done
recipe agentlm.train.preference --config "$preset" "${data_opts[@]}" --base-model "$from" \
    --output-dir "$output" --seed "$seed" --lr "$preference_lr" --set "beta=$beta" --set epochs=1 \
    "${steps[@]}" "${sets[@]}"
if ((sft)); then  # it continues the SFT stage's merged weights with a new adapter
    train_cmd+=(--set init_adapter=null)
fi
if ((dry_run)); then
    commands+=("$(printf '%q ' "${train_cmd[@]}")")
else
    "${train_cmd[@]}"
    echo "checkpoint: $output  (serve it with: agentlm serve --model $output)"
fi
fi

if ((dry_run)); then
    printf '%s\n' "${commands[@]}"
    exit 0
fi

echo "== 6/6 evaluate against the checkpoint in service, and promote"
if [ -z "$previous$promote" ] && ! ((${#eval_tasks[@]})); then
    echo "no --previous, --promote or --eval-tasks: nothing to evaluate or promote"
    exit 0
fi
stage=sft
((preference)) && stage=preference
decide=(--checkpoint "$output" --tolerance "$tolerance" --out "$workdir/promotion.json" --stage "$stage")
[ -z "$promote" ] || decide+=(--link "$promote")
if [ -n "$previous" ] || ((${#eval_tasks[@]})); then  # rows [previous, new], or [new] for the record
    eval_cmd=("$PYTHON" -m agentlm.train.eval)
    [ -z "$previous" ] || eval_cmd+=(--model "$previous")
    eval_cmd+=(--model "$output")
    for tasks in "${eval_tasks[@]}"; do eval_cmd+=(--tasks "$tasks"); done
    ((general)) || eval_cmd+=(--no-general)
    eval_cmd+=("${eval_opts[@]}" --json "$workdir/eval.json")
    printf '%q ' "${eval_cmd[@]}"; echo
    "${eval_cmd[@]}"
    decide+=(--eval "$workdir/eval.json")
fi
rm -f "$workdir/promotion.json"
verdict=0
"$PYTHON" -m agentlm.train.promote "${decide[@]}" || verdict=$?
case $verdict in
    0)
        if [ -z "$promote" ]; then
            echo "not worse${previous:+ than $previous}, but no --promote LINK to repoint: nothing promoted"
        else  # a new link under a temporary name, renamed over the old one: never a moment without one
            mkdir -p "$(dirname "$promote")"
            ln -sfn "$(readlink -m -- "$output")" "$promote.tmp.$$"
            mv -T "$promote.tmp.$$" "$promote"
            echo "promoted: $promote -> $(readlink -- "$promote")${previous:+ (was $previous)}"
        fi ;;
    3)
        echo "not promoted: the new checkpoint at $output is worse than $previous;" \
            "${promote:+$promote still points at the previous one; }see $workdir/promotion.json" ;;
    *) exit "$verdict" ;;
esac

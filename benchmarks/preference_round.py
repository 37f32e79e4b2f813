"""One round of preference tuning from simulated users, measured before and after.

The experiment of docs/results.md ("Preference tuning from users' feedback"), each stage resumable
(an output that exists is kept):

1. **Questions.** Held-out-style questions with gold answers, generated over the shipped sample
   company with the training data's task kinds (data/assistant_hr.py, assistant_scheduling.py):
   single questions whose answer is read from the database (no bookings or leave filings). None
   shares 13 words with an evaluation set, and none names a person, room or department that a
   held-out question names, so the held-out set stays about what the round never saw.
2. **Feedback.** The shipped default answers them through `agentlm serve` (the real API and
   store). A simulated user judges each answer against the gold one, as
   benchmarks/assistant.py grades: right gets 👍; wrong gets 👎, and for a share of those
   (``--review-share``) a reviewer writes a correction in the review queue: the step that went
   wrong (the first query, when the model's differs from the gold one: the gold step's reply), or
   else the gold answer.
3. **Training.** ``train/run.sh --no-sft``: the store's feedback as preference data
   (data/preferences.py: KTO on thumbs, DPO on corrections), continuing the shipped adapter.
4. **Evaluation.** benchmarks/assistant.py on the held-out assistant questions, for the default
   and for the new adapter, served alike (merged into the quantized base).

    python benchmarks/preference_round.py --work runs/preference-round [--questions 120] [--seed 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).parent))
from assistant import HELDOUT, ask_all, served  # noqa: E402

from agentlm.agent.actions import operation_reply  # noqa: E402
from agentlm.agent.databases import hr  # noqa: E402
from agentlm.agent.databases.scheduling import build_scheduling_database  # noqa: E402
from agentlm.agent.tools.sql import SQLTool  # noqa: E402
from agentlm.data.asktask import AssistantDataError, Task  # noqa: E402
from agentlm.data.assistant_hr import HR_KINDS  # noqa: E402
from agentlm.data.assistant_scheduling import SCHEDULING_KINDS  # noqa: E402
from agentlm.data.assistant_turns import run_task  # noqa: E402
from agentlm.data.decontaminate import EvalIndex, eval_task_texts  # noqa: E402
from agentlm.data.worlds import World  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = r"\b(?:\d+(?:\.\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|twelve)\b"
EVAL_SETS = [HELDOUT / "assistant_questions.jsonl", HELDOUT / "tool_calls.jsonl"]


# --- 1. questions ------------------------------------------------------------------------------
def _names(rows: dict[str, list[tuple]]) -> set[str]:
    """The words that name someone or something in the company: people, rooms, departments."""
    names = {w for e in rows["employees"] for w in (e[1], e[2])}
    names |= {w for r in rows["rooms"] for w in str(r[1]).split()}
    names |= {w for d in rows["departments"] for w in str(d[1]).split()}
    return {n.lower() for n in names if len(n) > 2}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _expect(task: Task, final: str, rows: list[tuple]) -> dict[str, Any] | None:
    """How a user would judge an answer: the values the gold answer states, or a refusal."""
    if task.kind.endswith("unanswerable"):
        return {"refusal": True}
    values = [str(v) for row in rows[:5] for v in row if v is not None]
    stated = [v for v in dict.fromkeys(values) if len(v) > 0 and v.lower() in final.lower()]
    keys: list[str] = []
    for v in stated:  # a long text (a policy): the figures in it are what a reader checks
        keys += re.findall(NUMBERS, v, re.IGNORECASE) if len(v) > 40 else [v]
    return {"all": list(dict.fromkeys(keys))} if keys else None


def make_questions(n: int, seed: int, out: Path) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="agentlm-feedback-questions-"))
    rows = hr.company_rows(0)  # the shipped sample company (agent/databases/hr.py, seed 0)
    world = World(0, rows, hr.build_hr_database(folder / "hr.duckdb", 0),
                  build_scheduling_database(folder / "scheduling.duckdb", 0))  # fmt: skip
    heldout = [json.loads(line) for line in EVAL_SETS[0].read_text().splitlines() if line.strip()]
    named = _names(rows) & {w for item in heldout for t in item["turns"] for w in _words(t["question"])}
    index = EvalIndex([t for path in EVAL_SETS for t in eval_task_texts(path)])
    kinds = [(f, w, "hr-assistant") for f, w in HR_KINDS] + [
        (f, w, "scheduling-assistant") for f, w in SCHEDULING_KINDS
    ]
    tools = {p: SQLTool(database=db, writes="scratch", render="repr")
             for p, db in (("hr-assistant", world.hr_db), ("scheduling-assistant", world.scheduling_db))}  # fmt: skip
    items, seen, dropped = [], set(), {"writes": 0, "names a held-out subject": 0, "overlap": 0, "no gold": 0}
    for _ in range(n * 40):
        if len(items) >= n:
            break
        fn, _, profile = rng.choices(kinds, weights=[w for _, w, _ in kinds])[0]
        try:
            task = fn(world, rng)
        except AssistantDataError:
            continue
        if task.follow_up is not None or {"write", "booking", "room_booking"} & set(task.meta):
            dropped["writes"] += 1
            continue
        if task.question.lower() in seen:
            continue
        if _words(task.question) & named:
            dropped["names a held-out subject"] += 1
            continue
        if index.hit(task.question):
            dropped["overlap"] += 1
            continue
        try:
            turns, final = run_task(task, tools[profile])
            last_rows = tools[profile].run_rows(task.steps[-1].sql) if task.steps else []
        except AssistantDataError:
            continue
        expect = _expect(task, final, last_rows)
        if expect is None:
            dropped["no gold"] += 1
            continue
        seen.add(task.question.lower())
        first = task.steps[0] if task.steps else None
        items.append({
            "id": f"feedback-{len(items):03d}-{task.kind}", "profile": profile, "category": task.kind,
            "turns": [{"question": turns[0].content, "expect": expect}],
            "gold": {"answer": final, "first_step": operation_reply(first.thought, first.sql) if first else None,
                     "first_sql": first.sql if first else None},
        })  # fmt: skip
    for tool in tools.values():
        tool.close()
    out.write_text("".join(json.dumps(item) + "\n" for item in items))
    print(f"{len(items)} feedback questions over the shipped sample -> {out}; left out: {dropped}")
    return items


# --- 2. feedback -------------------------------------------------------------------------------
def _squash_sql(sql: str | None) -> str:
    return re.sub(r"\s+", " ", (sql or "").strip().rstrip(";")).lower()


def _reviewed(item_id: str, share: float) -> bool:
    """Whether a reviewer gets to this thumbs-down run: a fixed draw per question."""
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def give_feedback(
    base_url: str, items: list[dict[str, Any]], results: list[Any], review_share: float
) -> dict:
    counts = {"up": 0, "down": 0, "step corrections": 0, "answer corrections": 0}
    gold = {item["id"]: item["gold"] for item in items}
    for r in results:
        if not r.trajectory_id:
            continue
        body: dict[str, Any] = {"trajectory_id": r.trajectory_id, "rating": 1 if r.correct else -1}
        if not r.correct and _reviewed(r.item_id, review_share):
            traj = httpx.get(f"{base_url}/v1/trajectories/{r.trajectory_id}", timeout=30).json()
            g = gold[r.item_id]
            first = traj["steps"][0] if traj["steps"] else None
            model_sql = ((first or {}).get("tool_call") or {}).get("input")
            if (
                g["first_step"]
                and first is not None
                and _squash_sql(model_sql) != _squash_sql(g["first_sql"])
            ):
                body |= {"corrected_step": 0, "corrected_output": g["first_step"], "comment": "wrong query"}
                counts["step corrections"] += 1
            else:
                body |= {"corrected_answer": g["answer"], "comment": "wrong answer"}
                counts["answer corrections"] += 1
        httpx.post(f"{base_url}/v1/feedback", json=body, timeout=30).raise_for_status()
        counts["up" if r.correct else "down"] += 1
    return counts


def collect_feedback(work: Path, items: list[dict[str, Any]], review_share: float, parallel: int) -> None:
    store = work / "store.sqlite3"
    with served("embedded", ["--store", str(store)]) as (base_url, _):
        client = OpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", timeout=900, max_retries=0)
        results = ask_all(client, base_url, "EMPTY", items, parallel)
        counts = give_feedback(base_url, items, results, review_share)
    right = sum(r.correct for r in results)
    summary = {"questions": len(items), "right": right, **counts}
    (work / "feedback.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"feedback: {right}/{len(results)} right; {counts}")


# --- 3. training, 4. evaluation ----------------------------------------------------------------
def train(work: Path, lr: str, beta: str, steps: int | None) -> Path:
    from agentlm.models import shipped
    from agentlm.serve.engines.weights import EMBEDDED_MODEL_ID, ensure_embedded_checkpoint

    out = work / "model"
    if (out / "adapter" / "adapter_model.safetensors").is_file():
        return out / "adapter"
    command = ["bash", str(ROOT / "train/run.sh"), "--no-sft", "--base-model", str(ensure_embedded_checkpoint()),
               "--preset", "gemma-270m-lora", "--store", str(work / "store.sqlite3"), "--output", str(out),
               "--workdir", str(work / "train"), "--preference-lr", lr, "--beta", beta,
               "--set", f"init_adapter={shipped(EMBEDDED_MODEL_ID)}", "--set", "batch_size=2",
               "--set", "grad_accum=4", "--set", "checkpoint_every=5"]  # fmt: skip
    if steps:
        command += ["--preference-steps", str(steps)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "PYTHON": sys.executable})
    return out / "adapter"


def evaluate(work: Path, name: str, model: str, questions: Path, parallel: int) -> dict[str, Any]:
    out = work / f"eval-{name}.json"
    if not out.is_file():
        command = [sys.executable, str(ROOT / "benchmarks/assistant.py"), "--model", model, "--questions",
                   str(questions), "--limit", "1000", "--json", str(out), "--parallel", str(parallel)]  # fmt: skip
        subprocess.run(command, check=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/preference-round"))
    parser.add_argument("--questions", type=int, default=120, help="feedback questions to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--review-share", type=float, default=0.5, help="thumbs-down runs a reviewer corrects"
    )
    parser.add_argument("--lr", default="5e-5")
    parser.add_argument("--beta", default="0.1")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: one epoch)")
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    questions = args.work / "feedback_questions.jsonl"
    if questions.is_file():
        items = [json.loads(line) for line in questions.read_text().splitlines()]
    else:
        items = make_questions(args.questions, args.seed, questions)
    if not (args.work / "feedback.json").is_file():
        collect_feedback(args.work, items, args.review_share, args.parallel)
    adapter = train(args.work, args.lr, args.beta, args.steps)
    heldout = HELDOUT / "assistant_questions.jsonl"
    before = evaluate(args.work, "before", "embedded", heldout, args.parallel)
    after = evaluate(args.work, "after", str(adapter), heldout, args.parallel)
    print("\nheld-out assistant questions (turns right):")
    for name, fig in (("before (shipped default)", before), ("after one preference round", after)):
        right = round(fig["accuracy"] * fig["n_questions"])
        print(f"  {name:28s} {right}/{fig['n_questions']}  ({fig['accuracy']:.1%}), p50 {fig['p50_s']:.1f} s")


if __name__ == "__main__":
    main()

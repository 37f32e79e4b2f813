"""Users' feedback as preference data: thumbs as KTO records, corrections as DPO pairs, from a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agentlm.agent.trajectory import ActionStep, Feedback, FinalAnswerStep, StopReason, ToolCall, Trajectory
from agentlm.data.formats import read_jsonl
from agentlm.data.preferences import is_pair
from agentlm.serve.store import open_store

SQL = "I look it up.\nAction: Operation\n```sql\nSELECT count(*) FROM employees WHERE dept = 'Sales';\n```"
ANSWER = "It is 9.\nAction: Answer\nFinal Answer: 9"


def run(created_at: float, protocol: str = "db", answered: bool = True) -> Trajectory:
    steps: list = [
        ActionStep(0, SQL, "I look it up.", ToolCall("sql", "SELECT count(*) FROM employees WHERE dept = 'Sales';"),
                   "[(10,)]"),
    ]  # fmt: skip
    if answered:
        steps.append(FinalAnswerStep(1, ANSWER, "It is 9.", "9"))
    return Trajectory(
        task="How many people work in Sales?",
        profile="hr-assistant",
        model="agentlm-gemma-3-270m",
        prompt=[
            {"role": "user", "content": "You operate a database."},
            {"role": "assistant", "content": "Ok."},
        ],
        protocol=protocol,
        steps=steps,
        final_answer="9" if answered else None,
        stop_reason=StopReason.ANSWER if answered else StopReason.MAX_ROUNDS,
        created_at=created_at,
    )


def test_thumbs_become_kto_records_and_corrections_dpo_pairs(tmp_path: Path) -> None:
    runs = {name: run(i) for i, name in enumerate(["liked", "disliked", "answer", "step", "unrated"])}
    runs["tools"] = run(6, protocol="tools")
    runs["cut short"] = run(7, answered=False)
    better_sql = "I count them.\nAction: Operation\n```sql\nSELECT count(*) FROM employees WHERE department = 'Sales';\n```"
    with open_store(tmp_path / "store.sqlite3") as store:
        for traj in runs.values():
            store.save(traj)
        store.set_feedback(runs["liked"].id, Feedback(1))
        store.set_feedback(runs["disliked"].id, Feedback(-1, "wrong count"))
        store.set_feedback(
            runs["answer"].id, Feedback(-1, "it is 10", corrected_answer="10 people work in Sales.")
        )
        store.set_feedback(
            runs["step"].id, Feedback(-1, "wrong column", corrected_step=0, corrected_output=better_sql)
        )
        store.set_feedback(runs["tools"].id, Feedback(1))
        store.set_feedback(runs["cut short"].id, Feedback(-1, "", corrected_answer="10"))
    out = tmp_path / "prefs.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "agentlm.cli", "data", "preferences", "--store", str(tmp_path / "store.sqlite3"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4 preference records" in result.stdout and "from 7 runs" in result.stdout
    assert "2 corrections (pairs), 1 liked, 1 disliked; 3 skipped" in result.stdout

    records = {c.id: c for c in read_jsonl(out)}  # ordinary AgentInstruct records: every reader takes them
    assert set(records) == {runs[n].id for n in ("liked", "disliked", "answer", "step")}
    liked, disliked = records[runs["liked"].id], records[runs["disliked"].id]
    assert liked.extra["label"] is True and disliked.extra["label"] is False
    assert [t.content for t in liked.turns if t.loss] == [SQL, ANSWER]  # the run's own replies are judged

    answer = records[runs["answer"].id]
    assert is_pair(answer) and answer.extra["rejected"] == ANSWER
    assert answer.turns[-1].content == "It is 9.\nAction: Answer\nFinal Answer: 10 people work in Sales."
    assert [t.loss for t in answer.turns if t.role == "assistant"] == [
        False,
        False,
        True,
    ]  # only the reply compared

    step = records[runs["step"].id]
    assert is_pair(step) and step.extra["rejected"] == SQL and step.extra["comment"] == "wrong column"
    assert [t.content for t in step.turns][-2:] == ["How many people work in Sales?", better_sql]
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("conversations" in r for r in raw)


def test_a_step_correction_ends_the_exported_conversation_with_the_written_reply(tmp_path: Path) -> None:
    from agentlm.data.formats import conversation_from_trajectory

    traj = run(1)
    traj.feedback = Feedback(
        -1, corrected_step=0, corrected_output="Better.\nAction: Operation\n```sql\nSELECT 1;\n```"
    )
    conv = conversation_from_trajectory(traj)
    assert conv.turns[-1].content.startswith("Better.") and conv.turns[-1].loss is True
    assert ANSWER not in [t.content for t in conv.turns]  # what followed answered the wrong reply
    assert conversation_from_trajectory(traj, use_correction=False).turns[-1].content == ANSWER

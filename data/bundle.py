"""Build the bundled HR-assistant trajectories from the tasks in data/hr_tasks.py.

Every statement runs against the sample HR database with the real SQL tool, so each observation is
what the agent would see and each answer is worded from the rows the database returned. The
trajectories open exactly as the agent's runs do (the profile's instruction, then "Ok.").

    python -m agentlm.data.bundle        # rewrites data/bundled/hr_trajectories.jsonl
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from agentlm.agent.actions import FinalAnswer, parse_db_reply
from agentlm.agent.profiles import load_profile
from agentlm.agent.trajectory import ToolCall
from agentlm.data.formats import Conversation, Turn, write_jsonl
from agentlm.data.hr import build_hr_database
from agentlm.data.hr_tasks import HR_TASKS, HRTask

SOURCE = "bundled/hr-assistant"


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("agentlm.data") / "bundled" / name))


def operation_reply(thought: str, sql: str) -> str:
    return f"{thought}\nAction: Operation\n```sql\n{sql}\n```"


def answer_reply(thought: str, answer: str) -> str:
    return f"{thought}\nAction: Answer\nFinal Answer: {answer}"


def _trajectory(task: HRTask, prompt: list[Turn], sql_tool, task_id: str) -> Conversation:
    turns = [*prompt, Turn("user", task.question)]
    for step in task.steps:
        reply = operation_reply(step.thought, step.sql)
        parsed = parse_db_reply(reply)
        assert parsed.action == ToolCall("sql", step.sql), f"{task_id}: reply does not parse to its SQL"
        observation = sql_tool.invoke(step.sql)
        if step.expect == "error":
            assert observation.startswith("Error:"), f"{task_id}: {step.sql!r} was meant to fail"
        elif step.expect is not None:
            assert observation == step.expect, (
                f"{task_id}: {step.sql!r} gave {observation}, expected {step.expect}"
            )
        elif observation.startswith("Error:") or observation == "[]":
            raise AssertionError(f"{task_id}: {step.sql!r} returned {observation}")
        turns += [Turn("assistant", reply, True), Turn("user", observation)]
    rows = sql_tool.run_rows(task.steps[-1].sql)
    reply = answer_reply(task.final_thought, task.answer(rows))
    assert isinstance(parse_db_reply(reply).action, FinalAnswer), f"{task_id}: answer does not parse"
    turns.append(Turn("assistant", reply, True))
    return Conversation(id=task_id, turns=turns, source=SOURCE)


def build_hr_trajectories(db_path: str | Path) -> list[Conversation]:
    """The bundled trajectories, computed against the database at `db_path`."""
    profile = load_profile("hr-assistant").model_copy(update={"database": str(db_path)})
    prompt = [
        Turn(m["role"], m["content"], False if m["role"] == "assistant" else None)
        for m in profile.opening_messages()
    ]
    try:
        return [
            _trajectory(task, prompt, profile.sql_tool, f"hr-{i:04d}")
            for i, task in enumerate(HR_TASKS, start=1)
        ]
    finally:
        profile.sql_tool.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        conversations = build_hr_trajectories(build_hr_database(Path(tmp) / "hr.duckdb"))
    out = bundled_path("hr_trajectories.jsonl")
    n = write_jsonl(out, conversations)
    print(f"wrote {n} trajectories to {out}")


if __name__ == "__main__":
    main()

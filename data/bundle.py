"""Build the bundled HR-assistant trajectories from the tasks in data/hr_tasks.py.

Every statement runs against the sample HR database with the real SQL tool, so each observation is
what the agent would see and each answer is worded from the rows the database returned. The
trajectories open exactly as the agent's runs do (the profile's instruction, then "Ok."), and every
assistant turn is checked to parse, with the agent's own parser, to the action it was written for.

    python -m agentlm.data.bundle        # rewrites data/bundled/hr_trajectories.jsonl
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from agentlm.agent.actions import FinalAnswer, ParsedReply, answer_reply, operation_reply, parse_db_reply
from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.profiles import load_profile
from agentlm.agent.tools.sql import SQLTool
from agentlm.agent.trajectory import ToolCall
from agentlm.data.formats import Conversation, Turn, context_turns, write_jsonl
from agentlm.data.hr_tasks import HR_TASKS, HRTask

PROFILE = "hr-assistant"
SOURCE = f"bundled/{PROFILE}"
HR_TRAJECTORIES = "hr_trajectories.jsonl"
GENERAL_CHAT = "general_chat.jsonl"


class BundleError(RuntimeError):
    """A task that does not produce the trajectory it was written for (stale SQL, wrong answer)."""


def bundled_path(name: str) -> Path:
    """A file in the installed data/bundled/ folder."""
    return Path(str(resources.files("agentlm.data") / "bundled" / name))


def _check_parses(task_id: str, reply: str, expected: ParsedReply) -> None:
    parsed = parse_db_reply(reply)
    if parsed != expected:
        raise BundleError(f"{task_id}: the reply parses to {parsed}, not {expected}:\n{reply}")


def _check_observation(task_id: str, sql: str, observation: str, expect: str | None) -> None:
    failed = observation.startswith("Error:")
    if expect == "error":
        if not failed:
            raise BundleError(f"{task_id}: {sql!r} was meant to fail but returned {observation}")
    elif failed or observation == "[]":
        raise BundleError(f"{task_id}: {sql!r} returned {observation}")
    elif expect is not None and observation != expect:
        raise BundleError(f"{task_id}: {sql!r} returned {observation}, the next step expects {expect}")


def build_trajectory(task: HRTask, task_id: str, prompt: list[Turn], sql_tool: SQLTool) -> Conversation:
    """One task's conversation, every observation and the answer computed by `sql_tool`."""
    turns = [*prompt, Turn("user", task.question)]
    for step in task.steps:
        reply = operation_reply(step.thought, step.sql)
        _check_parses(task_id, reply, ParsedReply(step.thought, ToolCall("sql", step.sql)))
        observation = sql_tool.invoke(step.sql)
        _check_observation(task_id, step.sql, observation, step.expect)
        turns += [Turn("assistant", reply, True), Turn("user", observation)]
    if task.steps[-1].expect == "error":
        raise BundleError(f"{task_id}: the last statement must succeed; the answer is worded from it")
    answer = task.fill_answer(sql_tool.run_rows(task.steps[-1].sql))
    reply = answer_reply("db", answer, task.final_thought)
    _check_parses(task_id, reply, ParsedReply(task.final_thought, FinalAnswer(answer)))
    turns.append(Turn("assistant", reply, True))
    return Conversation(id=task_id, turns=turns, source=SOURCE)


def build_hr_trajectories(db_path: str | Path) -> list[Conversation]:
    """The bundled trajectories, computed against the HR database at `db_path`.

    The prompt is what the hr-assistant profile opens a run of the task's question with
    (instruction with this database's schema, "Ok.", the worked example nearest the question),
    with AgentInstruct's loss flags: null on user turns, false on the opening's assistant turns.
    """
    profile = load_profile(PROFILE).with_database(db_path)
    try:
        return [
            build_trajectory(
                task,
                f"hr-{i:04d}",
                context_turns(profile.opening_messages([task.question])),
                profile.sql_tool,
            )
            for i, task in enumerate(HR_TASKS, start=1)
        ]
    finally:
        profile.sql_tool.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        conversations = build_hr_trajectories(build_hr_database(Path(tmp) / "hr.duckdb", seed=0))
    out = bundled_path(HR_TRAJECTORIES)
    n = write_jsonl(out, conversations)
    print(f"wrote {n} trajectories to {out}")


if __name__ == "__main__":
    main()

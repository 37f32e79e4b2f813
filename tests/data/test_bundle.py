"""The bundled data: HR trajectories that are exactly what the database and the agent produce today,
and general chat that reads as plain ShareGPT conversations."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agentlm.agent.actions import FinalAnswer, parse_db_reply
from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.loop import Agent
from agentlm.agent.models import Completion
from agentlm.agent.profiles import load_profile
from agentlm.agent.tools.sql import SQLTool
from agentlm.agent.trajectory import StopReason, ToolCall
from agentlm.data.bundle import (
    GENERAL_CHAT,
    HR_TRAJECTORIES,
    SOURCE,
    BundleError,
    build_hr_trajectories,
    build_trajectory,
    bundled_path,
)
from agentlm.data.formats import Conversation, conversation_from_trajectory, read_jsonl, write_jsonl
from agentlm.data.hr_tasks import HR_TASKS, HRTask, SQLStep, TaskResultError

DANA = "How many vacation days does Dana Kim have left?"
BANK = load_profile("hr-assistant").exemplar_bank


def question_turn(conv: Conversation) -> int:
    """Where the task's question is: after the instruction, "Ok." and the worked example shown."""
    return 2 + len(BANK.nearest([_task(conv)]).messages)


def _task(conv: Conversation) -> str:
    return next(t.content for t in conv.turns if t.role == "user" and t.content in QUESTIONS)


QUESTIONS = {task.question for task in HR_TASKS}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hr_database(tmp_path_factory.mktemp("bundle") / "hr.duckdb", seed=0)


@pytest.fixture(scope="module")
def tool(db: Path):
    t = SQLTool(database=db)
    yield t
    t.close()


@pytest.fixture(scope="module")
def bundled() -> list[Conversation]:
    return read_jsonl(bundled_path(HR_TRAJECTORIES))


def test_bundled_file_is_exactly_a_fresh_build(db: Path, tmp_path: Path):
    write_jsonl(tmp_path / "fresh.jsonl", build_hr_trajectories(db))
    assert (tmp_path / "fresh.jsonl").read_text() == bundled_path(HR_TRAJECTORIES).read_text(), (
        "data/bundled/hr_trajectories.jsonl is stale: run `python -m agentlm.data.bundle`"
    )


def test_shape_ids_and_loss_flags(bundled: list[Conversation]):
    assert len(bundled) == len(HR_TASKS) >= 15
    assert [c.id for c in bundled] == [f"hr-{i:04d}" for i in range(1, len(bundled) + 1)]
    instruction = bundled[0].turns[0].content
    for conv in bundled:
        assert conv.source == SOURCE == "bundled/hr-assistant"
        first, ok, *rest = conv.turns
        example = list(BANK.nearest([_task(conv)]).messages)
        shot, (question, *rest) = rest[: len(example)], rest[len(example) :]
        assert (first.role, first.loss, first.content) == ("user", None, instruction)
        assert (ok.role, ok.loss, ok.content) == ("assistant", False, "Ok.")
        # The worked example a run of this question is shown, never trained on (AgentInstruct's
        # loss: false on 1-shot turns).
        assert [{"role": t.role, "content": t.content} for t in shot] == example
        assert [t.loss for t in shot] == [None, False] * (len(example) // 2)
        assert (question.role, question.loss) == ("user", None)
        roles = [t.role for t in rest]
        assert roles == ["assistant", "user"] * (len(rest) // 2) + ["assistant"]
        assert all(t.loss is True for t in rest if t.role == "assistant")
        assert all(t.loss is None for t in rest if t.role == "user")
    assert "CREATE TABLE leave_balances" in instruction and "{schema}" not in instruction


def test_every_observation_and_answer_is_the_databases(bundled: list[Conversation], tool: SQLTool):
    """Re-run each trajectory's SQL: observations are the tool's output, answers state the rows."""
    for conv, task in zip(bundled, HR_TASKS, strict=True):
        q = question_turn(conv)
        assert conv.turns[q].content == task.question
        last_sql = None
        for reply, observation in zip(conv.turns[q + 1 : -1 : 2], conv.turns[q + 2 :: 2], strict=True):
            action = parse_db_reply(reply.content).action
            assert isinstance(action, ToolCall), f"{conv.id}: {reply.content}"
            assert observation.content == tool.invoke(action.input), conv.id
            last_sql = action.input
        final = parse_db_reply(conv.turns[-1].content).action
        assert isinstance(final, FinalAnswer), conv.id
        rows = tool.run_rows(last_sql)
        assert final.text == task.fill_answer(rows)
        # Independently of the templates: every value of the result is stated in the answer.
        for value in (v for row in rows for v in row):
            shown = (
                [f"{value:%Y-%m-%d}", f"{value:%H:%M}"] if isinstance(value, dt.datetime) else [str(value)]
            )
            assert all(s in final.text for s in shown), f"{conv.id}: {value!r} missing from {final.text!r}"


def test_dana_kim_task_states_her_remaining_vacation_days(bundled: list[Conversation], tool: SQLTool):
    # Written independently of the task's SQL (DuckDB allows one configuration per file in a process,
    # so this reads through the same read-only tool).
    [(left,)] = tool.run_rows(
        "SELECT sum(entitled_days) - sum(used_days) FROM leave_balances WHERE leave_type = 'vacation' "
        "AND year = 2026 AND employee_id IN (SELECT employee_id FROM employees WHERE email = 'dana.kim@example.com')"
    )
    (conv,) = [c for c in bundled if c.turns[question_turn(c)].content == DANA]
    assert conv.turns[-1].content.endswith(f"Final Answer: Dana Kim has {left} vacation days left in 2026.")


def test_tasks_are_varied_and_show_multi_step_work_and_recovery(bundled: list[Conversation]):
    sqls = [s.sql for t in HR_TASKS for s in t.steps]
    assert len(set(sqls)) == len(sqls), "each statement should appear once"
    assert len({t.question for t in HR_TASKS}) == len(HR_TASKS)
    assert all("\n" not in sql for sql in sqls), "the instruction asks for one-line SQL"
    assert sum(len(t.steps) == 2 and t.steps[0].expect != "error" for t in HR_TASKS) >= 2
    recoveries = [
        c for c in bundled if any(t.content.startswith("Error:") for t in c.turns if t.role == "user")
    ]
    assert recoveries and all(
        isinstance(parse_db_reply(c.turns[-1].content).action, FinalAnswer) for c in recoveries
    )
    tables = " ".join(sqls)
    for table in (
        "employees",
        "departments",
        "leave_balances",
        "leave_requests",
        "policies",
        "rooms",
        "meetings",
    ):
        assert f"FROM {table}" in tables or f"JOIN {table}" in tables, table


def test_replaying_a_bundled_trajectory_through_the_agent_gives_the_same_conversation(
    bundled: list[Conversation], db: Path
):
    """The bundled turns are exactly what the agent loop produces when the model says the same."""
    profile = load_profile("hr-assistant").with_database(db)

    class Replay:
        model_id = "replay"

        def __init__(self, replies: list[str]):
            self.replies = replies

        def complete(self, messages, params, tools=None):
            return Completion(self.replies.pop(0))

    try:
        for conv in bundled:
            q = question_turn(conv)
            replies = [t.content for t in conv.turns[q + 1 :] if t.role == "assistant"]
            traj = Agent(Replay(replies), profile).run(conv.turns[q].content, conv.id)
            assert traj.stop_reason == StopReason.ANSWER
            replayed = conversation_from_trajectory(traj)
            assert replayed.turns == conv.turns, conv.id
    finally:
        profile.sql_tool.close()


def test_a_task_whose_result_does_not_fit_fails_the_build(tool: SQLTool):
    prompt = []
    nobody = HRTask(
        "How many vacation days does Nobody have left?",
        (SQLStep("Look it up.", "SELECT used_days FROM leave_balances WHERE employee_id = -1;"),),
        "Done.",
        "Nobody has {0} days left.",
    )
    with pytest.raises(BundleError, match="returned \\[\\]"):
        build_trajectory(nobody, "hr-x", prompt, tool)
    wrong_id = HRTask(
        "Which id has People?",
        (
            SQLStep(
                "Id first.", "SELECT department_id FROM departments WHERE name = 'People';", expect="[(9,)]"
            ),
            SQLStep("Then count.", "SELECT count(*) FROM employees WHERE department_id = 9;"),
        ),
        "Done.",
        "{0}",
    )
    with pytest.raises(BundleError, match="expects \\[\\(9,\\)\\]"):
        build_trajectory(wrong_id, "hr-x", prompt, tool)
    not_an_error = HRTask(
        "?", (SQLStep("Oops.", "SELECT 1;", expect="error"), SQLStep("Fix.", "SELECT 2;")), "Done.", "{0}"
    )
    with pytest.raises(BundleError, match="meant to fail"):
        build_trajectory(not_an_error, "hr-x", prompt, tool)


@pytest.mark.parametrize(
    ("answer", "row", "rows", "message"),
    [
        ("{0}", None, [], "no rows"),
        ("{0}", None, [(1,), (2,)], "exactly one row"),
        ("{0}", None, [(1, 2)], "columns \\[0\\]"),
        ("{0} {1}", None, [(1,)], "columns \\[0, 1\\]"),
        ("{rows}", "{0}", [(None,)], "NULL"),
    ],
)
def test_answer_templates_reject_results_of_the_wrong_shape(answer, row, rows, message):
    task = HRTask("q", (SQLStep("t", "SELECT 1;"),), "t", answer, row)
    with pytest.raises(TaskResultError, match=message):
        task.fill_answer(rows)


def test_answer_templates_word_lists():
    task = HRTask("q", (SQLStep("t", "SELECT 1;"),), "t", "{count} rooms: {rows}.", row="{0} ({1})")
    assert task.fill_answer([("A", 4)]) == "1 rooms: A (4)."
    assert task.fill_answer([("A", 4), ("B", 6), ("C", 8)]) == "3 rooms: A (4), B (6) and C (8)."


def test_general_chat_is_plain_sharegpt():
    convs = read_jsonl(bundled_path(GENERAL_CHAT))
    assert 35 <= len(convs) <= 60
    assert [c.id for c in convs] == [f"general-{i:04d}" for i in range(1, len(convs) + 1)]
    assert any(len(c.turns) > 2 for c in convs), "some conversations should have follow-ups"
    for conv in convs:
        assert conv.source == "bundled/general"
        assert [t.role for t in conv.turns] == ["user", "assistant"] * (len(conv.turns) // 2)
        assert 1 <= len(conv.turns) // 2 <= 3
        assert all(t.loss is None and t.content.strip() == t.content and t.content for t in conv.turns)
        assert all(len(t.content.split()) <= 120 for t in conv.turns if t.role == "assistant"), conv.id

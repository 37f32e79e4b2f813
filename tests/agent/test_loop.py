"""The ReAct loop, driven by a scripted model (the model is not what is under test here)."""

import duckdb
import pytest
from scripted import ScriptedModel

from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.loop import Agent, AgentConfig, Setup
from agentlm.agent.models import ModelEndpointError
from agentlm.agent.profiles import load_profile
from agentlm.agent.trajectory import ActionStep, FinalAnswerStep, StopReason, ToolCall, Trajectory

SQL = "SELECT count(*) FROM employees WHERE department_id = 5;"


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    db = build_hr_database(tmp_path_factory.mktemp("loop") / "hr.duckdb")
    return load_profile("hr-assistant").with_database(db)


def op(sql):
    return f"Counting.\nAction: Operation\n```sql\n{sql}\n```"


def test_a_run_queries_then_answers_and_records_everything(profile):
    model = ScriptedModel([op(SQL), "It is 12.\nAction: Answer\nFinal Answer: 12 people."])
    agent = Agent(model, profile)
    steps = list_steps(agent, "How many people work in People?")
    traj = steps.pop()
    assert [type(s) for s in steps] == [ActionStep, FinalAnswerStep]
    assert steps[0].tool_call.input == SQL and steps[0].observation == "[(12,)]"
    assert traj.final_answer == "12 people." and traj.stop_reason == StopReason.ANSWER
    # The model saw the instruction with the schema, "Ok.", the worked example nearest the task
    # (the profile's exemplar bank), the task, then its own step and the result.
    second = model.seen[1]
    assert "CREATE TABLE employees" in second[0]["content"] and second[1]["content"] == "Ok."
    example = list(profile.exemplar_bank.nearest(["How many people work in People?"]).messages)
    assert second[2 : 2 + len(example)] == example
    assert second[2 + len(example)]["content"] == "How many people work in People?"
    assert second[-1] == {"role": "user", "content": "[(12,)]"}


def list_steps(agent, task):
    stream = agent.stream(task)
    out = []
    while True:
        try:
            out.append(next(stream))
        except StopIteration as done:
            return out + [done.value]


def test_invalid_replies_become_observations_then_stop_the_run(profile):
    agent = Agent(ScriptedModel(["no idea", "still none", "nope"]), profile)
    traj = agent.run("?")
    assert traj.stop_reason == StopReason.INVALID_FORMAT
    assert traj.invalid_actions == 3
    assert all("Action: Operation" in s.observation for s in traj.steps)


def test_sql_errors_are_observations_and_the_run_goes_on(profile):
    agent = Agent(
        ScriptedModel([op("SELECT nope FROM employees;"), "Action: Answer\nFinal Answer: x"]), profile
    )
    traj = agent.run("?")
    assert traj.steps[0].error == "tool_error" and traj.steps[0].observation.startswith("Error:")
    assert traj.stop_reason == StopReason.ANSWER


def test_the_same_reply_three_times_is_a_repetitive_failure(profile):
    agent = Agent(ScriptedModel([op(SQL)] * 5), profile)
    traj = agent.run("?")
    assert traj.stop_reason == StopReason.REPEATED_OUTPUT and len(traj.steps) == 3


def test_round_budget(profile):
    replies = [op(f"SELECT {i};") for i in range(5)]
    traj = Agent(ScriptedModel(replies), profile, AgentConfig(max_rounds=4)).run("?")
    assert traj.stop_reason == StopReason.MAX_ROUNDS and len(traj.steps) == 4


def test_an_endpoint_failure_ends_the_run_with_the_reason(profile):
    traj = Agent(ScriptedModel([ModelEndpointError("connection refused")]), profile).run("?")
    assert traj.stop_reason == StopReason.ERROR and "connection refused" in traj.error


def test_trajectory_round_trips_through_json(profile):
    traj = Agent(ScriptedModel([op(SQL), "Action: Answer\nFinal Answer: 12"]), profile).run("?", "traj-fixed")
    again = Trajectory.from_json(traj.to_json())
    assert again == traj and again.id == "traj-fixed"
    assert again.messages() == traj.messages()


def test_the_tool_never_writes_whatever_the_model_asks(profile):
    evil = op("WITH d AS (DELETE FROM employees RETURNING *) SELECT count(*) FROM d;")
    traj = Agent(ScriptedModel([evil, "Action: Answer\nFinal Answer: done"]), profile).run("?")
    assert traj.steps[0].observation.startswith("Error:")
    profile.sql_tool.close()
    with duckdb.connect(profile.database, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM employees").fetchone()[0] == 60


def test_a_failing_tool_is_an_observation_not_a_crash(tmp_path):
    missing = load_profile("hr-assistant").with_database(tmp_path / "missing.duckdb")
    agent = Agent(ScriptedModel([]), missing)
    setup = Setup("db", [], "?", {"sql": missing.sql_tool}, 15)
    observation, error = agent._call_tool(setup, ToolCall("sql", "SELECT 1"))
    assert error == "tool_error" and observation.startswith("Error: FileNotFoundError:")
    assert "agentlm data hr-db" in observation
    assert (
        agent._call_tool(setup, ToolCall("shell", "ls"))[0]
        == "Error: there is no tool 'shell'; use one of sql."
    )
    # A near miss of a tool name gets a suggestion.
    assert "Did you mean 'sql'?" in agent._call_tool(setup, ToolCall("sqll", "SELECT 1"))[0]


def test_a_valid_action_resets_the_invalid_count(profile):
    replies = ["?", "??", op(SQL), "???", "????", "Action: Answer\nFinal Answer: 12"]
    traj = Agent(ScriptedModel(replies), profile).run("?")
    assert traj.stop_reason == StopReason.ANSWER and traj.invalid_actions == 4


def test_steps_stream_before_the_model_is_asked_again(profile):
    model = ScriptedModel([op(SQL), "Action: Answer\nFinal Answer: 12"])
    stream = Agent(model, profile).stream("?")
    first = next(stream)
    assert isinstance(first, ActionStep) and len(model.seen) == 1

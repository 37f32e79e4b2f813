"""The OpenAI tool-calling protocol and the run budgets, against a real HTTP endpoint on 127.0.0.1.

The endpoint is a scripted OpenAI-compatible server (a stand-in for a tool-calling model such as
vLLM with --enable-auto-tool-choice, which cannot run here); the agent talks to it with the real
`openai` client, so requests and tool-call messages go over the wire in the real format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from localhttp import Handler, serve

from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.loop import Agent, AgentConfig, estimate_tokens
from agentlm.agent.models import Completion, GenerationParams, OpenAIChatModel
from agentlm.agent.profiles import load_profile
from agentlm.agent.trajectory import StopReason, Trajectory


@contextmanager
def scripted_endpoint(replies: list[dict | tuple[int, dict]]) -> Iterator[tuple[str, list[dict]]]:
    """An OpenAI-compatible /v1/chat/completions replaying `replies`; yields (base URL, requests seen)."""
    pending, requests = list(replies), []

    class Completions(Handler):
        def do_POST(self):  # noqa: N802 - the http.server API
            requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            reply = pending.pop(0)
            status, payload = reply if isinstance(reply, tuple) else (200, _completion(reply))
            self.send(status, json.dumps(payload).encode(), "application/json")

    with serve(Completions) as base:
        yield f"{base}/v1", requests


def _completion(message: dict) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "tool-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
    }


def call(call_id: str, name: str, arguments: str) -> dict:
    return {
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }


@pytest.fixture(scope="module")
def tools_profile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tools")
    db = build_hr_database(folder / "hr.duckdb")
    base = load_profile("hr-assistant").model_dump()
    profile = load_profile("hr-assistant").model_validate(
        {**base, "id": "hr-tools", "protocol": "tools", "database": str(db), "one_shot": []}
    )
    yield profile
    profile.sql_tool.close()


def run(
    profile, replies, config=None, task="How many people work in People?"
) -> tuple[Trajectory, list[dict]]:
    with scripted_endpoint(replies) as (url, requests):
        model = OpenAIChatModel("tool-model", url, timeout=10)
        return Agent(model, profile, config).run(task), requests


SQL = "SELECT count(*) AS people FROM employees WHERE department_id = 5"


def test_tool_calls_run_the_tool_and_go_back_as_tool_messages(tools_profile):
    traj, requests = run(
        tools_profile,
        [call("call_1", "sql", json.dumps({"query": SQL})), {"content": "12 people work in People."}],
    )
    assert traj.stop_reason == StopReason.ANSWER and traj.final_answer == "12 people work in People."
    assert traj.protocol == "tools"
    step = traj.steps[0]
    assert step.tool_call.name == "sql" and step.tool_call.id == "call_1"
    assert "12" in step.observation and step.error is None
    # The request advertised the tools as OpenAI functions with their argument schema.
    (spec,) = requests[0]["tools"]
    assert spec["type"] == "function" and spec["function"]["name"] == "sql"
    assert "query" in spec["function"]["parameters"]["properties"]
    # The second request carried the call and its result in the native message shapes.
    assistant, tool = requests[1]["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_1"
    assert assistant["tool_calls"][0]["function"] == {"name": "sql", "arguments": json.dumps({"query": SQL})}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": step.observation}
    # The trajectory survives a round trip through JSON, tool call ids included.
    assert Trajectory.from_json(traj.to_json()).messages() == traj.messages()


def test_bad_arguments_and_unknown_tools_are_observations_and_the_run_goes_on(tools_profile):
    traj, _ = run(
        tools_profile,
        [
            call("c1", "sql", "{not json"),
            call("c2", "sqll", json.dumps({"query": SQL})),
            {"content": "I could not find out."},
        ],
    )
    assert traj.stop_reason == StopReason.ANSWER
    bad_json, unknown = traj.steps[:2]
    assert bad_json.error == "tool_error" and "not valid JSON" in bad_json.observation
    assert unknown.error == "tool_error" and "Did you mean 'sql'?" in unknown.observation


def test_the_same_call_three_times_is_a_repetitive_failure_but_different_calls_are_not(tools_profile):
    same = call("c", "sql", json.dumps({"query": SQL}))
    traj, _ = run(tools_profile, [same, same, same])
    assert traj.stop_reason == StopReason.REPEATED_OUTPUT and len(traj.steps) == 3
    varied = [call(f"c{i}", "sql", json.dumps({"query": f"SELECT {i}"})) for i in range(3)]
    traj, _ = run(tools_profile, [*varied, {"content": "done"}])
    assert traj.stop_reason == StopReason.ANSWER and len(traj.steps) == 4


def test_a_context_length_error_from_the_endpoint_ends_the_run_as_context_budget(tools_profile):
    error = {
        "error": {
            "message": "This model's maximum context length is 4096 tokens",
            "type": "invalid_request_error",
        }
    }
    traj, _ = run(tools_profile, [call("c", "sql", json.dumps({"query": SQL})), (400, error)])
    assert traj.stop_reason == StopReason.CONTEXT_BUDGET and "maximum context length" in traj.error


def test_the_context_budget_stops_before_a_round_that_would_not_fit(tools_profile):
    task = "How many people work in People?"
    setup = tools_profile.setup(task)
    opening = estimate_tokens([*setup.prompt, {"role": "user", "content": task}])
    # The first round fits; its long observation (40 rows) pushes the second one over the budget.
    config = AgentConfig(max_context_tokens=opening + 64 + 100, generation=GenerationParams(max_tokens=64))
    big = call(
        "c", "sql", json.dumps({"query": "SELECT range AS n, repeat('x', 30) AS filler FROM range(40)"})
    )
    traj, requests = run(tools_profile, [big, {"content": "never asked"}], config, task)
    assert traj.stop_reason == StopReason.CONTEXT_BUDGET
    assert len(traj.steps) == 1 and len(requests) == 1


class SlowModel:
    model_id = "slow"

    def complete(self, messages, params, tools=None):
        time.sleep(0.2)
        return Completion("Thinking.\nAction: Operation\n```sql\nSELECT 1;\n```")


def test_the_time_budget_ends_a_run_between_rounds(tools_profile):
    profile = load_profile("hr-assistant").with_database(tools_profile.database)
    try:
        traj = Agent(SlowModel(), profile, AgentConfig(max_seconds=0.3, max_repeats=10)).run("?")
    finally:
        profile.sql_tool.close()
    assert traj.stop_reason == StopReason.TIME_BUDGET and 1 <= len(traj.steps) <= 3

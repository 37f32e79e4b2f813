"""The shipped default, end to end: `agentlm serve` on the embedded AgentLM tune, real clients.

One server (the real default model, the real sample databases, the real store) answers: a held-out
HR question and its follow-up through the `openai` client, graded with the held-out benchmark's
grader; a LangChain `bind_tools` round trip whose call and final answer are checked; and a room
found in one turn and booked in the next, held until approved, then applied to the calendar.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import duckdb
import httpx
import pytest
from openai import OpenAI

from agentlm.processes import free_port, start_server, stop

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# A held-out follow-up (benchmarks/heldout/assistant_questions.jsonl) the default answers right.
FOLLOW_UP = "hr-follow-manager-joined"


def _benchmark():
    spec = importlib.util.spec_from_file_location("assistant_benchmark", REPO / "benchmarks" / "assistant.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _heldout(item_id: str) -> dict:
    for line in (REPO / "benchmarks" / "heldout" / "assistant_questions.jsonl").read_text().splitlines():
        item = json.loads(line)
        if item["id"] == item_id:
            return item
    raise KeyError(item_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    env = {**os.environ, "AGENTLM_HOME": os.environ["AGENTLM_HOME"]}  # the session's home (tests/conftest.py)
    port = free_port()
    proc, _ = start_server([], port, env=env, timeout=600)  # no --model: the shipped default
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_the_default_is_the_agentlm_tune(server: str) -> None:
    models = [m.id for m in OpenAI(base_url=f"{server}/v1", api_key="EMPTY").models.list()]
    assert models[0] == "agentlm-gemma-3-270m" and "hr-assistant" in models


def test_a_held_out_question_and_its_follow_up_are_answered_right(server: str) -> None:
    client = OpenAI(base_url=f"{server}/v1", api_key="EMPTY")
    grade = _benchmark().grade
    item = _heldout(FOLLOW_UP)
    messages: list[dict] = []
    for turn in item["turns"]:
        messages.append({"role": "user", "content": turn["question"]})
        reply = client.chat.completions.create(model=item["profile"], messages=messages, temperature=0)
        answer = reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop"
        assert grade(answer, turn["expect"], question=turn["question"]), (turn["question"], answer)
        messages.append({"role": "assistant", "content": answer})
    traj = httpx.get(f"{server}/v1/trajectories/{reply.model_extra['agentlm']['trajectory_id']}").json()
    assert [m["role"] for m in traj["history"]] == ["user", "assistant"]  # the follow-up saw the first turn


def test_langchain_bind_tools_calls_the_tool_and_answers_from_its_result(server: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def leave_balance(employee: str, leave_type: str) -> str:
        """Remaining leave days of an employee; leave_type is vacation, sick or personal."""
        return json.dumps({"employee": employee, "leave_type": leave_type, "remaining_days": 17})

    model = ChatOpenAI(base_url=f"{server}/v1", api_key="EMPTY", model="agentlm-gemma-3-270m", temperature=0)
    bound = model.bind_tools([leave_balance])
    question = HumanMessage("How many vacation days does Ingrid Larsen have left?")
    first = bound.invoke([question])
    assert len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call["name"] == "leave_balance"
    assert call["args"] == {"employee": "Ingrid Larsen", "leave_type": "vacation"}
    result = ToolMessage(leave_balance.invoke(call["args"]), tool_call_id=call["id"])
    final = bound.invoke([question, first, result])
    assert not final.tool_calls and "17" in final.content


def test_a_room_found_in_one_turn_is_booked_in_the_next_and_waits_for_approval(server: str) -> None:
    client = OpenAI(base_url=f"{server}/v1", api_key="EMPTY")
    messages = [
        {
            "role": "user",
            "content": "Which rooms with at least 8 seats are free on 2026-12-08 from 14:00 to 15:00?",
        }
    ]
    first = client.chat.completions.create(model="scheduling-assistant", messages=messages, temperature=0)
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {
            "role": "user",
            "content": 'Book the first of them for a "Budget check" organised by Elena Silva with Omar Ivanov.',
        },
    ]
    second = client.chat.completions.create(model="scheduling-assistant", messages=messages, temperature=0)
    traj_id = second.model_extra["agentlm"]["trajectory_id"]
    traj = httpx.get(f"{server}/v1/trajectories/{traj_id}").json()
    pending = "\n".join(traj["pending_writes"])
    assert "INSERT INTO meetings" in pending and "'2026-12-08 14:00'" in pending, second.choices[
        0
    ].message.content
    home = Path(os.environ["AGENTLM_HOME"])
    with duckdb.connect(str(home / "scheduling.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM meetings WHERE title = 'Budget check'").fetchone() == (0,)
    decision = httpx.post(f"{server}/v1/trajectories/{traj_id}/writes", json={"decision": "approve"})
    assert decision.status_code == 200, decision.text
    with duckdb.connect(str(home / "scheduling.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM meetings WHERE title = 'Budget check'").fetchone() == (1,)


def test_the_ui_keeps_the_conversation_across_questions(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AGENTLM_API_URL", f"{server}/v1")
    grade = _benchmark().grade
    item = _heldout(FOLLOW_UP)
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=300)
    at.run()
    for turn in item["turns"]:
        at.chat_input[0].set_value(turn["question"]).run()
        assert not at.exception
        answer = "\n".join(md.value for md in at.chat_message[-1].markdown)
        assert grade(answer, turn["expect"], question=turn["question"]), (turn["question"], answer)
    assert len(at.chat_message) == 2 * len(item["turns"])

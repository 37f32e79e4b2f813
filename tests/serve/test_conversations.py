"""Multi-turn agent conversations through the real HTTP server and the official openai client.

The engine is scripted (a tiny random model cannot follow up on anything), so each test knows
what the model will say and checks what it was shown; the server, the HR profile, its SQL tool on
the sample database and the trajectory store are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from openai import OpenAI
from scripted import ScriptedEngine, hr_opening, scripted_server

Q1 = "How many vacation days does Dana Kim have left?"
Q2 = "And who is that person's manager?"
VACATION_SQL = (
    "SELECT entitled_days - used_days FROM leave_balances b JOIN employees e USING (employee_id) "
    "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim' AND b.year = 2026 AND b.leave_type = 'vacation';"
)
MANAGER_SQL = (
    "SELECT m.first_name, m.last_name FROM employees e JOIN employees m "
    "ON m.employee_id = e.manager_id WHERE e.first_name = 'Dana' AND e.last_name = 'Kim';"
)


def op(sql: str) -> str:
    return f"I look it up.\nAction: Operation\n```sql\n{sql}\n```"


def answer(text: str) -> str:
    return f"I have it.\nAction: Answer\nFinal Answer: {text}"


@dataclass
class Live:
    v1: str
    engine: ScriptedEngine
    client: OpenAI


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, agentlm_home) -> Iterator[Live]:
    with scripted_server(tmp_path_factory.mktemp("store") / "t.sqlite3") as (v1, engine):
        yield Live(v1, engine, OpenAI(base_url=v1, api_key="EMPTY", max_retries=0))


@pytest.fixture
def engine(live: Live) -> Iterator[ScriptedEngine]:
    yield live.engine
    live.engine.context_chars = None


def stored(live: Live, trajectory_id: str) -> dict:
    response = httpx.get(f"{live.v1}/trajectories/{trajectory_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_follow_up_question_sees_the_first_question_and_answer(live: Live, engine: ScriptedEngine) -> None:
    engine.script(op(VACATION_SQL), answer("Dana Kim has 18 vacation days left."))
    first = live.client.chat.completions.create(
        model="hr-assistant", messages=[{"role": "user", "content": Q1}]
    )
    a1 = first.choices[0].message.content
    assert a1 == "Dana Kim has 18 vacation days left."
    first_id = first.model_extra["agentlm"]["trajectory_id"]
    assert stored(live, first_id)["history"] == []

    # The second turn carries the whole conversation, as a chat client sends it; streamed this time.
    engine.script(op(MANAGER_SQL), answer("Dana Kim's manager is Zoe Kowalski."))
    conversation = [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": Q2},
    ]
    chunks = list(
        live.client.chat.completions.create(model="hr-assistant", messages=conversation, stream=True)
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Dana Kim's manager is Zoe Kowalski."
    second_id = chunks[0].model_extra["agentlm"]["trajectory_id"]

    # What the model saw first: the profile's opening, the earlier turn in the database protocol
    # (the answer the user read, as the "Final Answer" reply the model writes), then the question.
    prompt = engine.prompts()[0]
    opening = hr_opening(Q1, Q2)
    history = [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: Dana Kim has 18 vacation days left."},
    ]
    assert prompt == [*opening, *history, {"role": "user", "content": Q2}]
    assert engine.prompts()[1][-1] == {"role": "user", "content": "[('Zoe', 'Kowalski')]"}

    record = stored(live, second_id)
    assert record["task"] == Q2 and record["history"] == history and record["history_dropped"] == 0
    assert record["final_answer"] == "Dana Kim's manager is Zoe Kowalski."


def test_a_client_system_message_is_ignored(live: Live, engine: ScriptedEngine) -> None:
    engine.script(answer("18 days."))
    messages = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": Q1}]
    reply = live.client.chat.completions.create(model="hr-assistant", messages=messages)
    assert reply.choices[0].message.content == "18 days."
    assert not any("pirate" in m["content"] for m in engine.prompts()[0])


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        ([{"role": "user", "content": Q1}, {"role": "assistant", "content": "18"}], "messages.1.role", "last message"),
        ([{"role": "user", "content": Q1}, {"role": "user", "content": Q2}], "messages.1.role", "alternates"),
        ([{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": Q2}], "messages.0.role", "alternates"),
        (
            [{"role": "user", "content": Q1}, {"role": "tool", "content": "18", "tool_call_id": "c1"},
             {"role": "user", "content": Q2}],
            "messages.1.role", "own tools",
        ),
        ([{"role": "user", "content": " "}], "messages.0.content", "empty"),
        ([{"role": "system", "content": "Be brief."}], "messages.0.role", "needs a task"),
    ],
)  # fmt: skip
def test_a_conversation_the_agent_cannot_continue_is_400_naming_the_message(
    live: Live, engine: ScriptedEngine, messages: list, param: str, words: str
) -> None:
    engine.script()
    with pytest.raises(openai.BadRequestError) as e:
        live.client.chat.completions.create(model="hr-assistant", messages=messages)
    assert e.value.body["param"] == param and words in e.value.body["message"]
    assert engine.requests == []  # nothing ran


def test_an_overlong_conversation_forgets_its_oldest_exchanges_and_still_answers(
    live: Live, engine: ScriptedEngine
) -> None:
    exchanges = [
        [
            {"role": "user", "content": f"Question {i}: " + "w" * 2000},
            {"role": "assistant", "content": f"Answer {i}."},
        ]
        for i in range(3)
    ]
    opening = sum(len(m["content"]) for m in hr_opening(*(e[0]["content"] for e in exchanges), Q2))
    # The engine's window holds the opening, the question and one earlier exchange, not two.
    engine.context_chars = opening + len(Q2) + 2000 + 500
    engine.script(answer("Zoe Kowalski."))
    conversation = [m for exchange in exchanges for m in exchange] + [{"role": "user", "content": Q2}]
    reply = live.client.chat.completions.create(model="hr-assistant", messages=conversation)
    assert reply.choices[0].message.content == "Zoe Kowalski."
    ext = reply.model_extra["agentlm"]
    assert ext["stop_reason"] == "answer" and ext["history_dropped"] == 2
    # Refused twice (the engine's own context check), answered with the newest exchange only.
    assert [len(p) for p in engine.prompts()] == [len(engine.prompts()[0]) - 2 * i for i in range(3)]
    record = stored(live, ext["trajectory_id"])
    assert record["history_dropped"] == 2
    assert record["history"] == [
        {"role": "user", "content": exchanges[2][0]["content"]},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: Answer 2."},
    ]

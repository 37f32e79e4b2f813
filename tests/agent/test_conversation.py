"""Multi-turn agents: a follow-up question runs with the earlier turns, written in the protocol.

The model is scripted (it is not what is under test); the profile, its SQL tool and the sample
HR database are the real ones.
"""

from __future__ import annotations

import pytest
from scripted import ScriptedModel

from agentlm.agent.actions import answer_reply
from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.loop import Agent, AgentConfig, Setup, estimate_tokens
from agentlm.agent.models import ContextLengthError
from agentlm.agent.profiles import ConversationError, history_messages, load_profile, split_conversation
from agentlm.agent.trajectory import StopReason, Trajectory

Q1 = "How many vacation days does Dana Kim have left?"
A1 = "Dana Kim has 18 vacation days left."
Q2 = "And who is that person's manager?"
MANAGER_SQL = (
    "SELECT m.first_name, m.last_name FROM employees e JOIN employees m "
    "ON m.employee_id = e.manager_id WHERE e.first_name = 'Dana' AND e.last_name = 'Kim';"
)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    db = build_hr_database(tmp_path_factory.mktemp("conversation") / "hr.duckdb")
    hr = load_profile("hr-assistant").with_database(db)
    yield hr
    hr.sql_tool.close()


def op(sql: str) -> str:
    return f"I look it up.\nAction: Operation\n```sql\n{sql}\n```"


def answer(text: str) -> str:
    return f"Found it.\nAction: Answer\nFinal Answer: {text}"


# --- the conversation's shape ------------------------------------------------------------------


def test_split_conversation_takes_the_last_user_turn_as_the_task_and_ignores_system_messages():
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": f"  {Q2}\n"},
    ]
    earlier, task = split_conversation(messages)
    assert task == Q2
    assert earlier == [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]


@pytest.mark.parametrize(
    ("messages", "index", "field", "words"),
    [
        ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}], 0, "role", "'user' was expected"),
        ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}], 1, "role", "alternates"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], 1, "role", "last message"),
        ([{"role": "system", "content": "s"}], 0, "role", "needs a task"),
        ([{"role": "user", "content": "  "}], 0, "content", "empty"),
        (
            [{"role": "user", "content": "q"}, {"role": "tool", "content": "r", "tool_call_id": "c"}],
            1, "role", "tool result",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]},
                {"role": "user", "content": "q"},
            ],
            1, "role", "tool call",
        ),
        # The index is the message's place in the list sent, system messages counted.
        (
            [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "user", "content": "q"}],
            2, "role", "alternates",
        ),
    ],
)  # fmt: skip
def test_a_conversation_an_agent_cannot_continue_names_the_message(messages, index, field, words):
    with pytest.raises(ConversationError, match=words) as e:
        split_conversation(messages)
    assert (e.value.index, e.value.field) == (index, field)
    assert e.value.param == f"messages.{index}.{field}"


@pytest.mark.parametrize("protocol", ["db", "os", "tools"])
def test_earlier_answers_are_written_as_the_protocols_answer_reply(protocol):
    earlier = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": A1},
    ]
    assert history_messages(protocol, earlier) == [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": answer_reply(protocol, A1)},
    ]
    if protocol == "db":
        assert history_messages(protocol, earlier)[1]["content"] == f"Action: Answer\nFinal Answer: {A1}"


# --- runs ------------------------------------------------------------------------------------


def test_a_follow_up_sees_prompt_then_earlier_turns_then_its_question(profile):
    model = ScriptedModel([op(MANAGER_SQL), answer("Zoe Kowalski.")])
    traj = Agent(model, profile).run(
        Q2, history=[{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]
    )
    assert traj.stop_reason == StopReason.ANSWER and traj.final_answer == "Zoe Kowalski."
    assert traj.steps[0].observation == "[('Zoe', 'Kowalski')]"
    opening = profile.opening_messages([Q1, Q2])
    history = [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": f"Action: Answer\nFinal Answer: {A1}"},
    ]
    first = model.seen[0]
    assert first == [*opening, *history, {"role": "user", "content": Q2}]
    assert model.seen[1][: len(first)] == first  # the steps follow the question
    assert traj.history == history and traj.task == Q2 and traj.history_dropped == 0
    assert traj.messages()[: len(first)] == first


def test_a_first_question_has_no_history(profile):
    traj = Agent(ScriptedModel([answer("18 days.")]), profile).run(Q1)
    assert traj.history == [] and traj.previous_id is None


def test_the_previous_turns_trajectory_is_recorded_when_known(profile):
    traj = Agent(ScriptedModel([answer("Zoe.")]), profile).run(
        Q2,
        history=[{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}],
        previous_id="traj-1",
    )
    assert traj.previous_id == "traj-1"
    assert Trajectory.from_json(traj.to_json()) == traj


def test_a_fixed_setup_takes_no_history_from_the_caller(profile):
    setup = Setup("db", [], "?", {"sql": profile.sql_tool}, 3)
    with pytest.raises(ValueError, match="fixed setup"):
        Agent(ScriptedModel(), setup).run(history=[{"role": "user", "content": "q"}])


def long_history(exchanges: int, size: int = 3000) -> list[dict[str, str]]:
    out = []
    for i in range(exchanges):
        out += [
            {"role": "user", "content": f"question {i} " + "x" * size},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    return out


def test_an_overlong_history_forgets_its_oldest_exchanges_and_the_answer_still_comes(profile, caplog):
    history = long_history(4)
    opening = estimate_tokens([*profile.opening_messages([Q2]), {"role": "user", "content": Q2}])
    one_exchange = estimate_tokens(history[-2:])
    # Room for the opening, the question, the reply and about one and a half earlier exchanges.
    budget = opening + 384 + one_exchange * 3 // 2
    model = ScriptedModel([answer("Zoe Kowalski.")])
    with caplog.at_level("INFO", logger="agentlm.agent.loop"):
        traj = Agent(model, profile, AgentConfig(max_context_tokens=budget)).run(Q2, history=history)
    assert traj.stop_reason == StopReason.ANSWER and traj.final_answer == "Zoe Kowalski."
    assert traj.history_dropped == 3
    assert [m["content"][:10] for m in traj.history] == ["question 3", "Action: An"]  # the newest stayed
    assert model.seen[0] == traj.messages()[:-1]  # the record is what the model saw
    assert "forgot its oldest exchange (3 so far)" in caplog.text


def test_the_context_budget_still_stops_a_run_with_no_history_left(profile):
    traj = Agent(ScriptedModel(), profile, AgentConfig(max_context_tokens=50)).run(
        Q2, history=long_history(2)
    )
    assert traj.stop_reason == StopReason.CONTEXT_BUDGET
    assert traj.history == [] and traj.history_dropped == 2 and traj.steps == []


def test_the_endpoints_context_error_forgets_old_turns_and_asks_again(profile):
    too_long = ContextLengthError("this model's maximum context length is 4096 tokens")
    model = ScriptedModel([too_long, too_long, answer("Zoe Kowalski.")])
    traj = Agent(model, profile).run(Q2, history=long_history(3))
    assert traj.stop_reason == StopReason.ANSWER and traj.history_dropped == 2
    assert [len(prompt) for prompt in model.seen] == [len(model.seen[0]) - 2 * i for i in range(3)]
    assert len(traj.steps) == 1 and traj.steps[0].index == 0  # a retry is not a round
    # With nothing left to forget, the endpoint's error ends the run as before.
    stopped = Agent(ScriptedModel([too_long, too_long]), profile).run(Q2, history=long_history(1))
    assert stopped.stop_reason == StopReason.CONTEXT_BUDGET and "maximum context length" in stopped.error

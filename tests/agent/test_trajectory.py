"""The trajectory record survives JSON and renders the conversation the model saw."""

import pytest

from agentlm.agent.trajectory import (
    ActionStep,
    Feedback,
    FinalAnswerStep,
    StopReason,
    ToolCall,
    Trajectory,
    step_from_dict,
)


def sample() -> Trajectory:
    return Trajectory(
        task="How many rooms?",
        profile="hr-assistant",
        model="m",
        prompt=[{"role": "user", "content": "instruction"}, {"role": "assistant", "content": "Ok."}],
        steps=[
            ActionStep(0, "hmm", "hmm", None, "format hint", error="invalid_format"),
            ActionStep(1, "Count.\nAction: Operation\n```sql\nSELECT 1;\n```", "Count.", ToolCall("sql", "SELECT 1;"), "[(1,)]"),
            FinalAnswerStep(2, "Action: Answer\nFinal Answer: 10", "", "10", prompt_tokens=5),
        ],
        final_answer="10",
        stop_reason=StopReason.ANSWER,
        reward=1.0,
        feedback=Feedback(rating=-1, comment="wrong", corrected_answer="ten", created_at=1.0),
        duration_seconds=0.5,
    )  # fmt: skip


def test_json_round_trip_keeps_every_field_and_type():
    traj = sample()
    again = Trajectory.from_json(traj.to_json())
    assert again == traj
    assert isinstance(again.steps[1].tool_call, ToolCall) and isinstance(again.feedback, Feedback)
    assert again.steps[0].tool_call is None and again.stop_reason is StopReason.ANSWER


def test_messages_are_prompt_task_then_each_steps_turns():
    traj = sample()
    assert traj.messages() == [
        {"role": "user", "content": "instruction"},
        {"role": "assistant", "content": "Ok."},
        {"role": "user", "content": "How many rooms?"},
        {"role": "assistant", "content": "hmm"},
        {"role": "user", "content": "format hint"},
        {"role": "assistant", "content": traj.steps[1].model_output},
        {"role": "user", "content": "[(1,)]"},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: 10"},
    ]
    assert traj.invalid_actions == 1


def test_feedback_decides_success_over_reward():
    traj = sample()
    assert not traj.succeeded  # thumbs down beats reward 1
    traj.feedback = None
    assert traj.succeeded
    traj.reward = 0.0
    assert not traj.succeeded


def test_unknown_step_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown step kind"):
        step_from_dict({"kind": "dance"})


HISTORY = [
    {"role": "user", "content": "How many rooms?"},
    {"role": "assistant", "content": "Action: Answer\nFinal Answer: 10"},
]


def test_a_follow_up_renders_prompt_then_history_then_task_then_steps():
    traj = sample()
    traj.task, traj.history, traj.previous_id = "And how many are free?", list(HISTORY), "traj-before"
    messages = traj.messages()
    assert messages[:5] == [*traj.prompt, *HISTORY, {"role": "user", "content": "And how many are free?"}]
    assert messages[5:] == [m for s in traj.steps for m in s.messages()]
    again = Trajectory.from_json(traj.to_json())
    assert again == traj and again.history == HISTORY and again.previous_id == "traj-before"


def test_records_stored_before_conversations_still_load():
    old = sample().to_dict()
    for name in ("history", "previous_id", "history_dropped"):
        del old[name]
    traj = Trajectory.from_dict(old)
    assert traj.history == [] and traj.previous_id is None and traj.history_dropped == 0
    assert traj.messages() == sample().messages()

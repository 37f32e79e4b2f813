"""Exporting stored trajectories as AgentInstruct-format training conversations."""

from __future__ import annotations

import json
from pathlib import Path

from tiny import build_tokenizer

from agentlm.agent.trajectory import ActionStep, Feedback, FinalAnswerStep, StopReason, ToolCall, Trajectory
from agentlm.data.export import ExportReport
from agentlm.data.export import export_trajectories as export_runs
from agentlm.data.formats import read_jsonl
from agentlm.data.masks import IGNORE_INDEX, tokenize_conversation
from agentlm.data.templates import get_template
from agentlm.serve.store import open_store


def export_trajectories(store_path: Path, out: Path, **options) -> ExportReport:
    """What `agentlm data export` does: a store's snapshot, exported."""
    with open_store(store_path, readonly=True) as store:
        return export_runs(store.snapshot(), out, **options)


def make_trajectory(created_at: float, reward: float | None = None) -> Trajectory:
    return Trajectory(
        task="How many people work in Sales?",
        profile="hr-assistant",
        model="tiny",
        prompt=[
            {"role": "user", "content": "You operate a database."},
            {"role": "assistant", "content": "Ok."},
        ],
        steps=[FinalAnswerStep(0, "Action: Answer\nFinal Answer: 1", "", "1")],
        final_answer="1",
        stop_reason=StopReason.ANSWER,
        reward=reward,
        created_at=created_at,
    )


def fill_store(path: Path) -> dict[str, str]:
    runs = {
        "liked": make_trajectory(created_at=1),
        "disliked": make_trajectory(created_at=2),
        "rewarded": make_trajectory(created_at=3, reward=1.0),
        "unrated": make_trajectory(created_at=4),
        "corrected": make_trajectory(created_at=5),
    }
    with open_store(path) as store:
        for traj in runs.values():
            store.save(traj)
        store.set_feedback(runs["liked"].id, Feedback(1))
        store.set_feedback(runs["disliked"].id, Feedback(-1))
        store.set_feedback(runs["corrected"].id, Feedback(1, "close", corrected_answer="one person"))
    return {name: t.id for name, t in runs.items()}


def test_only_succeeded_runs_by_default(tmp_path: Path) -> None:
    ids = fill_store(tmp_path / "store.sqlite3")
    out = tmp_path / "out" / "export.jsonl"
    report = export_trajectories(tmp_path / "store.sqlite3", out)
    assert report == ExportReport(examined=5, written=3, skipped=2)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [ids["liked"], ids["rewarded"], ids["corrected"]]
    turns = records[0]["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
    assert [t["loss"] for t in turns] == [None, False, None, True]
    assert records[0]["source"] == "trajectories/hr-assistant"
    # The corrected answer replaces the model's, and the file reads back as training data.
    assert records[2]["conversations"][-1]["value"].endswith("Final Answer: one person")
    assert len(read_jsonl(out)) == 3


def test_all_runs_and_no_corrections_when_asked(tmp_path: Path) -> None:
    ids = fill_store(tmp_path / "store.sqlite3")
    out = tmp_path / "all.jsonl"
    report = export_trajectories(tmp_path / "store.sqlite3", out, include_all=True, use_corrections=False)
    assert report == ExportReport(examined=5, written=5, skipped=0)
    corrected = next(c for c in read_jsonl(out) if c.id == ids["corrected"])
    assert corrected.turns[-1].content.endswith("Final Answer: 1")


def follow_up() -> Trajectory:
    """The second turn of a conversation: its history is context, its own steps are the lesson."""
    traj = make_trajectory(created_at=6)
    traj.history = [
        {"role": "user", "content": "How many people work in People?"},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: 12 people."},
    ]
    traj.task = "And in Sales?"
    traj.steps = [
        ActionStep(0, "Count.\nAction: Operation\n```sql\nSELECT 10;\n```", "Count.", ToolCall("sql", "SELECT 10;"), "[(10,)]"),
        FinalAnswerStep(1, "Action: Answer\nFinal Answer: 10 people.", "", "10 people."),
    ]  # fmt: skip
    traj.final_answer = "10 people."
    return traj


def test_a_follow_up_exports_its_history_as_context_not_trained_on(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    traj = follow_up()
    with open_store(path) as store:
        store.save(traj)
        store.set_feedback(traj.id, Feedback(1))
    out = tmp_path / "export.jsonl"
    assert export_trajectories(path, out).written == 1
    (conv,) = read_jsonl(out)
    assert [(t.role, t.content, t.loss) for t in conv.turns] == [
        ("user", "You operate a database.", None),
        ("assistant", "Ok.", False),
        ("user", "How many people work in People?", None),
        ("assistant", "Action: Answer\nFinal Answer: 12 people.", False),  # the earlier answer
        ("user", "And in Sales?", None),
        ("assistant", traj.steps[0].model_output, True),
        ("user", "[(10,)]", None),
        ("assistant", "Action: Answer\nFinal Answer: 10 people.", True),
    ]
    # Rendered and masked as training does: only this run's own replies carry labels.
    tokenizer = build_tokenizer([t.content for t in conv.turns] * 20)
    example = tokenize_conversation(tokenizer, get_template("llama-2"), conv)
    learnt = tokenizer.decode(
        [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert "10 people." in learnt and "SELECT 10;" in learnt
    assert "12 people." not in learnt and "Ok." not in learnt and "And in Sales?" not in learnt

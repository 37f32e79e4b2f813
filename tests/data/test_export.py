"""Exporting stored trajectories as AgentInstruct-format training conversations."""

from __future__ import annotations

import json
from pathlib import Path

from agentlm.agent.trajectory import Feedback, FinalAnswerStep, StopReason, Trajectory
from agentlm.data.export import ExportReport, export_trajectories
from agentlm.data.formats import read_jsonl
from agentlm.serve.store import TrajectoryStore


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
    with TrajectoryStore(path) as store:
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

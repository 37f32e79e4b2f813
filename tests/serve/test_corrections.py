"""A person's correction of a run (its answer, or one step's reply) through the API and the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from scripted import scripted_server

from agentlm.agent.trajectory import ActionStep, Feedback, FinalAnswerStep, StopReason, ToolCall, Trajectory
from agentlm.serve.store import open_store


def make_run(created_at: float) -> Trajectory:
    return Trajectory(
        task="How many people work in Sales?",
        profile="hr-assistant",
        model="scripted",
        prompt=[
            {"role": "user", "content": "You operate a database."},
            {"role": "assistant", "content": "Ok."},
        ],
        steps=[
            ActionStep(
                0,
                "Look.\nAction: Operation\n```sql\nSELECT 1;\n```",
                "Look.",
                ToolCall("sql", "SELECT 1;"),
                "[(1,)]",
            ),
            FinalAnswerStep(1, "Action: Answer\nFinal Answer: 1", "", "1"),
        ],  # fmt: skip
        final_answer="1",
        stop_reason=StopReason.ANSWER,
        created_at=created_at,
    )


def test_a_step_correction_is_stored_and_takes_the_run_out_of_the_review_queue(tmp_path: Path) -> None:
    store_path = tmp_path / "store.sqlite3"
    runs = [make_run(float(i)) for i in range(3)]
    with open_store(store_path) as store:
        for r in runs:
            store.save(r)
            store.set_feedback(r.id, Feedback(-1, "wrong"))
    fix = "Count.\nAction: Operation\n```sql\nSELECT count(*) FROM employees;\n```"
    with scripted_server(store_path) as (v1, _):
        queue = httpx.get(f"{v1}/trajectories", params={"rating": "-1", "corrected": "false"}).json()
        assert queue["total"] == 3
        answer = httpx.post(
            f"{v1}/feedback",
            json={"trajectory_id": runs[0].id, "rating": -1, "comment": "count, not 1",
                  "corrected_step": 0, "corrected_output": fix},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        fixed = httpx.post(
            f"{v1}/feedback", json={"trajectory_id": runs[1].id, "rating": "down", "corrected_answer": "9"}
        )
        assert fixed.status_code == 200
        queue = httpx.get(f"{v1}/trajectories", params={"rating": "-1", "corrected": "false"}).json()
        assert [t["id"] for t in queue["data"]] == [runs[2].id]
        done = httpx.get(f"{v1}/trajectories", params={"corrected": "true"}).json()
        assert {t["id"] for t in done["data"]} == {runs[0].id, runs[1].id}
        one = httpx.get(f"{v1}/trajectories/{runs[0].id}").json()["feedback"]
        assert (
            one["corrected_step"] == 0 and one["corrected_output"] == fix and one["comment"] == "count, not 1"
        )

        # A later thumb without a correction puts the run back: the latest feedback counts.
        httpx.post(f"{v1}/feedback", json={"trajectory_id": runs[1].id, "rating": -1})
        queue = httpx.get(f"{v1}/trajectories", params={"rating": "-1", "corrected": "false"}).json()
        assert {t["id"] for t in queue["data"]} == {runs[1].id, runs[2].id}


def test_bad_corrections_are_400_naming_the_field_and_record_nothing(tmp_path: Path) -> None:
    store_path = tmp_path / "store.sqlite3"
    run = make_run(1.0)
    with open_store(store_path) as store:
        store.save(run)
    with scripted_server(store_path) as (v1, _):
        cases = [
            ({"corrected_step": 2, "corrected_output": "x"}, "corrected_step", "past the run's last step"),
            ({"corrected_step": 0}, "body", "go together"),
            ({"corrected_output": "x"}, "body", "go together"),
            ({"corrected_step": 0, "corrected_output": "x", "corrected_answer": "9"}, "body", "not both"),
            ({"corrected_step": -1, "corrected_output": "x"}, "corrected_step", "greater than or equal to 0"),
            ({"comment": "a\x00b"}, "comment", "NUL"),
            ({"corrected_answer": "\x00"}, "corrected_answer", "NUL"),
        ]
        for extra, param, message in cases:
            answer = httpx.post(f"{v1}/feedback", json={"trajectory_id": run.id, "rating": -1, **extra})
            assert answer.status_code == 400, (extra, answer.text)
            error = answer.json()["error"]
            assert error["param"] == param and message in error["message"], (extra, error)
        missing = httpx.post(
            f"{v1}/feedback",
            json={"trajectory_id": "traj-nope", "rating": -1, "corrected_step": 0, "corrected_output": "x"},
        )
        assert missing.status_code == 404
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("SELECT count(*) FROM feedback").fetchone() == (0,)


def test_a_version_2_store_learns_which_runs_are_corrected(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    runs = [make_run(float(i)) for i in range(3)]
    with open_store(path) as store:
        for r in runs:
            store.save(r)
    with sqlite3.connect(path) as conn:  # back to version 2's layout, with feedback written by it
        conn.executescript(
            "DROP INDEX trajectories_rating_corrected; ALTER TABLE trajectories DROP COLUMN corrected;"
            "ALTER TABLE feedback DROP COLUMN corrected_step; ALTER TABLE feedback DROP COLUMN corrected_output;"
            "UPDATE schema_version SET version = 2;"
        )
        for r, corrected in ((runs[0], "10"), (runs[1], None)):
            conn.execute(
                "INSERT INTO feedback (trajectory_id, rating, comment, corrected_answer, created_at) "
                "VALUES (?, -1, '', ?, 5.0)",
                (r.id, corrected),
            )
            conn.execute("UPDATE trajectories SET rating = -1 WHERE id = ?", (r.id,))
    with open_store(path) as store:
        assert [t.id for t in store.list(corrected=True)] == [runs[0].id]
        assert [t.id for t in store.list(rating=-1, corrected=False)] == [runs[1].id]
        assert store.get(runs[0].id).feedback.corrected_step is None

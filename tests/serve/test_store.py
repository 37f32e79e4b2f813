"""The trajectory store: durable SQLite (WAL), round trips, feedback, read-only access."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentlm.agent.trajectory import (
    ActionStep,
    Feedback,
    FinalAnswerStep,
    StopReason,
    ToolCall,
    Trajectory,
)
from agentlm.serve.store import SCHEMA_VERSION, StoreError, TrajectoryStore


def make_trajectory(profile: str = "hr-assistant", created_at: float = 1000.0, **kw) -> Trajectory:
    return Trajectory(
        task="How many people work in Sales?",
        profile=profile,
        model="tiny",
        prompt=[
            {"role": "user", "content": "You operate a database."},
            {"role": "assistant", "content": "Ok."},
        ],
        steps=[
            ActionStep(
                0,
                "Count.\nAction: Operation\n```sql\nSELECT 1\n```",
                "Count.",
                ToolCall("sql", "SELECT 1"),
                "[(1,)]",
            ),
            FinalAnswerStep(
                1, "Action: Answer\nFinal Answer: 1", "", "1", prompt_tokens=40, completion_tokens=9
            ),
        ],
        final_answer="1",
        stop_reason=StopReason.ANSWER,
        created_at=created_at,
        **kw,
    )


@pytest.fixture
def store(tmp_path: Path):
    with TrajectoryStore(tmp_path / "store.sqlite3") as s:
        yield s


def test_the_store_uses_wal_and_full_sync(store: TrajectoryStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_trajectory_round_trips_exactly(store: TrajectoryStore) -> None:
    traj = make_trajectory(reward=1.0)
    store.save(traj)
    loaded = store.get(traj.id)
    assert loaded == traj
    assert isinstance(loaded.steps[0], ActionStep) and loaded.steps[0].tool_call == ToolCall(
        "sql", "SELECT 1"
    )
    assert store.get("traj-unknown") is None


def test_feedback_is_merged_and_the_latest_wins(store: TrajectoryStore) -> None:
    traj = make_trajectory()
    store.save(traj)
    assert store.set_feedback(traj.id, Feedback(-1, "wrong", "2"))
    assert store.set_feedback(traj.id, Feedback(1, "right after all"))
    loaded = store.get(traj.id)
    assert loaded.feedback.rating == 1 and loaded.feedback.comment == "right after all"
    assert loaded.succeeded
    assert not store.set_feedback("traj-unknown", Feedback(1))
    # Every submission is kept.
    assert store._conn.execute("SELECT count(*) FROM feedback").fetchone()[0] == 2


def test_saving_again_keeps_feedback(store: TrajectoryStore) -> None:
    traj = make_trajectory()
    store.save(traj)
    store.set_feedback(traj.id, Feedback(-1))
    store.save(traj)
    assert store.get(traj.id).feedback.rating == -1


def test_list_is_newest_first_and_filters_by_profile(store: TrajectoryStore) -> None:
    old, new, other = (
        make_trajectory(created_at=1),
        make_trajectory(created_at=2),
        make_trajectory("sched", 3),
    )
    for t in (old, new, other):
        store.save(t)
    assert [t.id for t in store.list()] == [other.id, new.id, old.id]
    assert [t.id for t in store.list(profile="hr-assistant")] == [new.id, old.id]
    assert [t.id for t in store.list(limit=1, offset=1)] == [new.id]
    assert [t.id for t in store.iter_all()] == [old.id, new.id, other.id]
    assert len(store) == 3


def test_readonly_reads_but_cannot_write(store: TrajectoryStore) -> None:
    traj = make_trajectory()
    store.save(traj)
    with TrajectoryStore(store.path, readonly=True) as reader:
        assert reader.get(traj.id) == traj
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.save(make_trajectory())
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.set_feedback(traj.id, Feedback(1))
    assert len(store) == 1


def test_readonly_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no trajectory store"):
        TrajectoryStore(tmp_path / "missing.sqlite3", readonly=True)
    assert not (tmp_path / "missing.sqlite3").exists()


def test_a_store_from_a_newer_agentlm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    TrajectoryStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        TrajectoryStore(path)


# --- migrations, filters, snapshots ----------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE trajectories (id TEXT PRIMARY KEY, profile TEXT NOT NULL, model TEXT NOT NULL,
    created_at REAL NOT NULL, reward REAL, rating INTEGER, data TEXT NOT NULL);
CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, trajectory_id TEXT NOT NULL,
    rating INTEGER NOT NULL, comment TEXT NOT NULL, corrected_answer TEXT, created_at REAL NOT NULL);
INSERT INTO schema_version VALUES (1);
"""


def test_a_version_1_store_is_upgraded_in_place_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    old = make_trajectory(created_at=5.0)
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute(
            "INSERT INTO trajectories VALUES (?, ?, ?, ?, ?, ?, ?)",
            (old.id, old.profile, old.model, old.created_at, None, 1, old.to_json()),
        )
        conn.execute(
            "INSERT INTO feedback (trajectory_id, rating, comment, created_at) VALUES (?, 1, 'good', 6.0)",
            (old.id,),
        )
    with TrajectoryStore(path) as store:
        (back,) = store.list()
        assert back.id == old.id and back.feedback.comment == "good"
        assert store.list(stop_reason="answer")[0].id == old.id  # the new column was filled from the JSON
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_filters_and_counts(store: TrajectoryStore) -> None:
    a = make_trajectory("hr-assistant", 10.0, reward=1.0)
    b = make_trajectory("scheduling-assistant", 20.0, reward=0.0)
    c = make_trajectory("hr-assistant", 30.0)
    for t in (a, b, c):
        store.save(t)
    store.set_feedback(c.id, Feedback(-1))
    ids = lambda **f: [t.id for t in store.list(**f)]  # noqa: E731
    assert ids(profile="hr-assistant") == [c.id, a.id]
    assert ids(rating=-1) == [c.id] and ids(rating="none") == [b.id, a.id]
    assert ids(min_reward=0.5) == [a.id] and ids(max_reward=0.5) == [b.id]
    assert ids(since=15.0, until=30.0) == [b.id]
    assert store.count() == 3 and store.count(profile="hr-assistant") == 2 and store.count(model="other") == 0


def test_a_snapshot_is_one_moment_while_writers_go_on(store: TrajectoryStore) -> None:
    for i in range(30):
        store.save(make_trajectory(created_at=float(i)))
    snapshot = store.snapshot(page=5)
    first = next(snapshot)
    for i in range(30, 40):  # written while the export is half-way: not blocked, not seen
        store.save(make_trajectory(created_at=float(i)))
    rest = list(snapshot)
    assert first.created_at == 0.0 and len(rest) == 29 and len(store) == 40

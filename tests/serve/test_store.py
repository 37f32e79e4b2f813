"""The trajectory store, on both backends: round trips, feedback, filters, snapshots, stats and
read-only access run on SQLite and on a real PostgreSQL server (the `postgres` tests); durable
SQLite (WAL) and its migrations are SQLite's own. PostgreSQL's own: test_store_postgres.py."""

from __future__ import annotations

import json
import sqlite3
import threading
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
from agentlm.serve.store import SCHEMA_VERSION, SQLiteStore, StoreError, TrajectoryStore, open_store
from agentlm.serve.store import sqlite as store_module


def make_trajectory(
    profile: str = "hr-assistant", created_at: float = 1000.0, model: str = "tiny", **kw
) -> Trajectory:
    return Trajectory(
        task="How many people work in Sales?",
        profile=profile,
        model=model,
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
        created_at=created_at,
        **{"stop_reason": StopReason.ANSWER, **kw},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """An empty store on each backend: a SQLite file, or a fresh database on a real PostgreSQL."""
    location = (
        tmp_path / "store.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    with open_store(location) as s:
        yield s


def location(store: TrajectoryStore) -> str | Path:
    return store.path if isinstance(store, SQLiteStore) else store.url


def sql(store: TrajectoryStore, query: str, *args) -> list[tuple]:
    """Run one statement (``?`` placeholders) on the store's own connection; its rows, if any."""
    with store._transaction() as execute:
        cursor = execute(query, args)
        return cursor.fetchall() if cursor.description else []


def test_the_sqlite_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite3")
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


def test_a_follow_up_keeps_its_history_and_rows_from_before_conversations_load(
    store: TrajectoryStore,
) -> None:
    history = [
        {"role": "user", "content": "How many people work in People?"},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: 12"},
    ]
    follow_up = make_trajectory(history=history, previous_id="traj-first", history_dropped=1)
    store.save(follow_up)
    loaded = store.get(follow_up.id)
    assert loaded == follow_up and loaded.history == history and loaded.messages()[2:4] == history
    # A row written before trajectories had these fields: its JSON lacks them.
    old = make_trajectory()
    data = old.to_dict()
    for name in ("history", "previous_id", "history_dropped"):
        del data[name]
    store.save(old)
    sql(store, "UPDATE trajectories SET data = ? WHERE id = ?", json.dumps(data), old.id)
    again = store.get(old.id)
    assert again == old and again.history == [] and again.previous_id is None


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
    assert sql(store, "SELECT count(*) FROM feedback") == [(2,)]


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
    with open_store(location(store), readonly=True) as reader:
        assert reader.get(traj.id) == traj and reader.count() == 1
        with pytest.raises(StoreError, match="opened read-only"):
            reader.save(make_trajectory())
        with pytest.raises(StoreError, match="opened read-only"):
            reader.set_feedback(traj.id, Feedback(1))
        with pytest.raises(Exception, match="read-?only"):  # the database's own rule, too
            sql(reader, "DELETE FROM trajectories")
    assert len(store) == 1 and store.get(traj.id).feedback is None


def test_readonly_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no trajectory store"):
        open_store(tmp_path / "missing.sqlite3", readonly=True)
    assert not (tmp_path / "missing.sqlite3").exists()


# --- migrations ------------------------------------------------------------------------------------

# A store as AgentLM wrote it at schema version 1, frozen here: the fixture migrations start from.
V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE trajectories (id TEXT PRIMARY KEY, profile TEXT NOT NULL, model TEXT NOT NULL,
    created_at REAL NOT NULL, reward REAL, rating INTEGER, data TEXT NOT NULL);
CREATE INDEX trajectories_profile_created ON trajectories (profile, created_at);
CREATE INDEX trajectories_created ON trajectories (created_at);
CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, trajectory_id TEXT NOT NULL
    REFERENCES trajectories (id), rating INTEGER NOT NULL, comment TEXT NOT NULL,
    corrected_answer TEXT, created_at REAL NOT NULL);
CREATE INDEX feedback_trajectory ON feedback (trajectory_id, seq);
INSERT INTO schema_version VALUES (1);
"""


def _layout(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Every table's columns and every index's columns: the schema, whatever its SQL text."""
    names = conn.execute("SELECT name, type FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {
        name: conn.execute(f"PRAGMA {'table_info' if kind == 'table' else 'index_info'}({name})").fetchall()
        for name, kind in sorted(names)
    }


def write_v1_store(path: Path, trajectories: list[Trajectory]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
        for t in trajectories:
            rating = t.feedback.rating if t.feedback else None
            conn.execute(
                "INSERT INTO trajectories VALUES (?, ?, ?, ?, ?, ?, ?)",
                (t.id, t.profile, t.model, t.created_at, t.reward, rating, t.to_json()),
            )
    sqlite3.connect(path).close()


def test_the_version_1_fixture_is_what_version_1_code_created() -> None:
    fixture, code = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    fixture.executescript(V1_SCHEMA)
    for statement in store_module._V1:
        code.execute(statement)
    assert _layout(fixture) == _layout(code)


def test_a_version_1_store_is_upgraded_in_place_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    old = [make_trajectory(created_at=float(i), reward=float(i % 2)) for i in range(50)]
    write_v1_store(path, old)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO feedback (trajectory_id, rating, comment, created_at) VALUES (?, 1, 'good', 60.0)",
            (old[7].id,),
        )
        conn.execute("UPDATE trajectories SET rating = 1 WHERE id = ?", (old[7].id,))
    with SQLiteStore(path) as store:
        assert len(store) == 50
        assert [t.id for t in store.snapshot()] == [t.id for t in old]
        assert store.get(old[7].id).feedback.comment == "good"
        assert store.count(stop_reason="answer") == 50  # the new column was filled from the JSON
        assert store.count(rating=1) == 1 and store.count(min_reward=1.0) == 25
        store.save(make_trajectory(created_at=99.0))  # and it takes new runs
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with SQLiteStore(path) as store:  # reopening an up-to-date store changes nothing
        assert len(store) == 51


def test_a_failed_migration_leaves_the_store_as_it_was(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "v1.sqlite3"
    write_v1_store(path, [make_trajectory()])
    broken = {
        **store_module.MIGRATIONS,
        3: ["ALTER TABLE trajectories ADD COLUMN x TEXT", "SELECT nonsense("],
    }
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 3)
    with pytest.raises(StoreError, match="from store schema version 1 to 3 failed at step 3"):
        SQLiteStore(path)
    with sqlite3.connect(path) as conn:  # not even migration 2, which worked, is kept
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        columns = {row[1] for row in conn.execute("PRAGMA table_info(trajectories)")}
        assert "x" not in columns and "stop_reason" not in columns
        assert conn.execute("SELECT count(*) FROM trajectories").fetchone() == (1,)


def test_a_store_from_a_newer_agentlm_is_refused_read_only_too(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer AgentLM"):
            SQLiteStore(path, readonly=readonly)
    with sqlite3.connect(path) as conn:  # refused, not touched
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION + 1,)]


def test_files_that_are_not_stores_are_refused_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 100)
    with pytest.raises(StoreError, match="not an AgentLM trajectory store"):
        SQLiteStore(text)
    assert text.read_text() == "not a database " * 100
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an AgentLM trajectory store"):
        SQLiteStore(other)
    with sqlite3.connect(other) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT name FROM sqlite_schema").fetchall() == [("t",)]


# --- filters, counts, snapshots --------------------------------------------------------------------


def test_filters_and_counts(store: TrajectoryStore) -> None:
    a = make_trajectory("hr-assistant", 10.0, reward=1.0)
    b = make_trajectory("scheduling-assistant", 20.0, model="big", reward=0.0)
    c = make_trajectory("hr-assistant", 30.0, stop_reason=StopReason.MAX_ROUNDS)
    for t in (a, b, c):
        store.save(t)
    store.set_feedback(c.id, Feedback(-1))
    ids = lambda **f: [t.id for t in store.list(**f)]  # noqa: E731
    assert ids(profile="hr-assistant") == [c.id, a.id]
    assert [t.id for t in store.list(limit=1, offset=1, profile="hr-assistant")] == [a.id]
    assert ids(model="big") == [b.id] and ids(model="tiny", profile="scheduling-assistant") == []
    assert ids(rating=-1) == [c.id] and ids(rating="none") == [b.id, a.id] and ids(rating=1) == []
    assert ids(min_reward=0.5) == [a.id] and ids(max_reward=0.5) == [b.id]
    assert ids(min_reward=0.0, max_reward=1.0) == [b.id, a.id]  # no reward: matches no reward bound
    assert ids(since=15.0, until=30.0) == [b.id] and ids(since=30.0) == [c.id] and ids(until=10.0) == []
    assert ids(stop_reason="max_rounds") == [c.id]
    assert store.count() == 3 and store.count(profile="hr-assistant") == 2 and store.count(model="other") == 0
    assert store.count(rating="none", since=15.0) == 1
    assert [t.id for t in store.snapshot(profile="hr-assistant")] == [a.id, c.id]  # oldest first
    with pytest.raises(ValueError, match="rating must be"):
        store.list(rating=2)


def test_saving_a_run_again_without_its_feedback_keeps_the_rating_filter(store: TrajectoryStore) -> None:
    traj = make_trajectory()
    store.save(traj)
    store.set_feedback(traj.id, Feedback(1))
    traj.writes_status = "applied"  # the server re-saves a run it loaded earlier, feedback-less
    store.save(traj, record_feedback=False)
    assert store.count(rating=1) == 1 and store.count(rating="none") == 0
    assert store.get(traj.id).feedback.rating == 1


def test_a_snapshot_is_one_moment_while_writers_go_on(store: TrajectoryStore) -> None:
    for i in range(30):
        store.save(make_trajectory(created_at=float(i)))
    snapshot = store.snapshot(page=5)
    first = next(snapshot)
    for i in range(30, 40):  # written while the export is half-way: not blocked, not seen
        store.save(make_trajectory(created_at=float(i)))
    rest = list(snapshot)
    assert first.created_at == 0.0 and len(rest) == 29 and len(store) == 40


def test_a_snapshot_is_consistent_while_other_threads_write(store: TrajectoryStore) -> None:
    # Each new run sorts first (older created_at) and likes the run before it: a reader paging
    # through live data would see rows shift under it and feedback it did not see the run for.
    written: list[str] = []
    for i in range(200):
        written.append(make_trajectory(created_at=1e6 - i).id)
        store.save(make_trajectory(created_at=1e6 - i, id=written[-1]))
    stop, progress = threading.Event(), threading.Semaphore(0)

    def writer(offset: int) -> None:
        i = 0
        while not stop.is_set():
            traj = make_trajectory(created_at=-1e6 * offset - i)
            store.save(traj)
            store.set_feedback(traj.id, Feedback(1, comment=traj.id))
            progress.release()
            i += 1

    threads = [threading.Thread(target=writer, args=(n + 1,)) for n in range(3)]
    snapshot = store.snapshot(page=10)
    seen = [next(snapshot)]
    for t in threads:
        t.start()
    try:
        for _ in range(60):  # the writers commit while the snapshot's transaction is open
            assert progress.acquire(timeout=10), "a writer was blocked by the open snapshot"
        seen += list(snapshot)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert [t.id for t in seen] == written[::-1]  # exactly the runs there when it began
    assert all(t.feedback is None for t in seen)
    assert len(store) >= 260 and store.count(rating=1) == len(store) - 200
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_stats_count_per_day_and_model_per_stop_reason_and_per_run(store: TrajectoryStore) -> None:
    day = 1704067200.0  # 2024-01-01 00:00 UTC
    extra = ActionStep(1, "Again.", "Again.", ToolCall("sql", "SELECT 2"), "[(2,)]")
    liked = make_trajectory(created_at=day + 100, model="m1", duration_seconds=2.0)
    stuck = make_trajectory(created_at=day + 200, model="m1", duration_seconds=4.0)
    stuck.steps.insert(1, extra)
    stuck.stop_reason = StopReason.MAX_ROUNDS
    unrated = make_trajectory(created_at=day + 300, model="m2", duration_seconds=1.0)
    changed = make_trajectory(created_at=day + 86400 + 10, model="m1", duration_seconds=5.0)
    elsewhere = make_trajectory("other-profile", created_at=day + 400, model="m1")
    for traj in (liked, stuck, unrated, changed, elsewhere):
        store.save(traj)
    store.set_feedback(liked.id, Feedback(1))
    store.set_feedback(stuck.id, Feedback(-1))
    store.set_feedback(changed.id, Feedback(-1))
    store.set_feedback(changed.id, Feedback(1))  # the latest feedback is the one counted

    stats = store.stats(points=2, profile="hr-assistant")
    assert stats.total == 4
    assert [d.model_dump() for d in stats.days] == [
        {"day": "2024-01-01", "model": "m1", "runs": 2, "answered": 1, "thumbs_up": 1, "thumbs_down": 1,
         "mean_steps": 2.5, "mean_seconds": 3.0},
        {"day": "2024-01-01", "model": "m2", "runs": 1, "answered": 1, "thumbs_up": 0, "thumbs_down": 0,
         "mean_steps": 2.0, "mean_seconds": 1.0},
        {"day": "2024-01-02", "model": "m1", "runs": 1, "answered": 1, "thumbs_up": 1, "thumbs_down": 0,
         "mean_steps": 2.0, "mean_seconds": 5.0},
    ]  # fmt: skip
    assert stats.stop_reasons == {"answer": 3, "max_rounds": 1}
    # The latest two runs, oldest first.
    assert [(p.id, p.steps, p.duration_seconds) for p in stats.points] == [
        (unrated.id, 2, 1.0),
        (changed.id, 2, 5.0),
    ]
    assert stats.points[0].model == "m2" and stats.points[0].profile == "hr-assistant"
    assert stats.points[1].created_at == day + 86400 + 10
    # The filters are the list's.
    assert store.stats(rating=-1).total == 1 and store.stats(rating=-1).days[0].thumbs_down == 1
    assert store.stats(model="m2").stop_reasons == {"answer": 1}
    assert store.stats(since=day + 86400).total == 1
    empty = store.stats(profile="nobody")
    assert (empty.total, empty.days, empty.stop_reasons, empty.points) == (0, [], {}, [])


def test_one_claim_on_pending_writes_wins_until_it_is_released_or_decided(store: TrajectoryStore) -> None:
    held = make_trajectory(writes_status="pending", pending_writes=["INSERT INTO meetings VALUES (1)"])
    none = make_trajectory()
    store.save(held)
    store.save(none)
    claims = []
    start = threading.Barrier(4)

    def claim() -> None:
        start.wait()
        claims.append(store.claim_writes(held.id))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claims) == [False, False, False, True]
    assert not store.claim_writes(none.id) and not store.claim_writes("traj-unknown")
    store.release_writes(held.id)  # the decision failed: pending again, and claimable once
    assert store.claim_writes(held.id) and not store.claim_writes(held.id)
    held.writes_status = "applied"
    store.save(held, record_feedback=False)
    store.release_writes(held.id)  # too late: decided runs stay decided
    assert not store.claim_writes(held.id) and store.get(held.id).writes_status == "applied"

"""The trajectory store: every agent run the server finished, and what users said about it.

SQLite in WAL mode, written only by the server: readers (``agentlm data export``, a notebook)
open it read-only while the server writes, which DuckDB would not allow. Each trajectory is kept
whole as JSON (``Trajectory.to_json``) beside indexed columns for listing and filtering. Feedback
lives in its own table, one row per submission, and the latest is merged into the trajectory on
read, so nothing a user said is ever overwritten.

The schema is versioned: ``MIGRATIONS[v]`` takes a store from version v-1 to v, and opening a store
applies the missing ones in one transaction (a store written by a newer AgentLM is refused).
Durability: WAL with ``synchronous=FULL``, so every commit the API acknowledged is on disk before
the reply, and survives a kill -9 of the server (or a power cut). ``snapshot()`` reads on its own
read-only connection inside one read transaction: a consistent view that never blocks the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.request import pathname2url

from agentlm.agent.trajectory import Feedback, Trajectory

_V1 = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trajectories (
    id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at REAL NOT NULL,
    reward REAL,
    rating INTEGER,               -- the latest feedback's rating, for filtering
    data TEXT NOT NULL            -- Trajectory.to_json()
);
CREATE INDEX IF NOT EXISTS trajectories_profile_created ON trajectories (profile, created_at);
CREATE INDEX IF NOT EXISTS trajectories_created ON trajectories (created_at);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trajectory_id TEXT NOT NULL REFERENCES trajectories (id),
    rating INTEGER NOT NULL,
    comment TEXT NOT NULL,
    corrected_answer TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_trajectory ON feedback (trajectory_id, seq);
"""

# MIGRATIONS[v]: the statements that take a version v-1 store to version v.
MIGRATIONS: dict[int, list[str]] = {
    2: [
        # Columns the trajectory filters need, filled from the stored JSON.
        "ALTER TABLE trajectories ADD COLUMN stop_reason TEXT",
        "ALTER TABLE trajectories ADD COLUMN writes_status TEXT",
        "UPDATE trajectories SET stop_reason = json_extract(data, '$.stop_reason'), "
        "writes_status = json_extract(data, '$.writes_status')",
        "CREATE INDEX IF NOT EXISTS trajectories_model_created ON trajectories (model, created_at)",
        "CREATE INDEX IF NOT EXISTS trajectories_rating ON trajectories (rating)",
        "CREATE INDEX IF NOT EXISTS trajectories_reward ON trajectories (reward)",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)

# The trajectory's JSON with its latest feedback, if any, as one row.
_SELECT = """
SELECT t.data, f.rating, f.comment, f.corrected_answer, f.created_at
FROM trajectories t
LEFT JOIN feedback f ON f.seq = (SELECT max(seq) FROM feedback WHERE trajectory_id = t.id)
"""


@dataclass(frozen=True)
class TrajectoryFilter:
    """What to list: each given field narrows the result (times are unix seconds)."""

    profile: str | None = None
    model: str | None = None
    rating: Literal[1, -1, "none"] | None = None  # "none": no feedback yet
    min_reward: float | None = None
    max_reward: float | None = None
    since: float | None = None
    until: float | None = None
    stop_reason: str | None = None

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, op, value in (
            ("t.profile", "=", self.profile),
            ("t.model", "=", self.model),
            ("t.reward", ">=", self.min_reward),
            ("t.reward", "<=", self.max_reward),
            ("t.created_at", ">=", self.since),
            ("t.created_at", "<", self.until),
            ("t.stop_reason", "=", self.stop_reason),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                args.append(value)
        if self.rating == "none":
            clauses.append("t.rating IS NULL")
        elif self.rating is not None:
            clauses.append("t.rating = ?")
            args.append(self.rating)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


class StoreError(RuntimeError):
    """The store file cannot be used (missing, or written by a newer AgentLM)."""


class TrajectoryStore:
    """Trajectories and feedback in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no trajectory store at {self.path}")
            uri = f"file:{pathname2url(str(self.path.resolve()))}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False)
            # WAL lets readers in while the server writes; FULL syncs each commit, so a run the
            # API acknowledged survives a power cut.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._check_version()

    def _migrate(self) -> None:
        """Create a new store at version 1, then apply every migration it lacks, atomically."""
        conn = self._conn
        conn.isolation_level = None  # explicit transaction: DDL and the version move together
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _V1.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            if conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
                conn.execute("INSERT INTO schema_version VALUES (1)")
            (version,) = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            if version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                return  # _check_version says what to do
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (?)", (target,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.isolation_level = ""

    def _check_version(self) -> None:
        try:
            (version,) = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not an AgentLM trajectory store: {e}") from e
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {version}; this AgentLM reads version "
                f"{SCHEMA_VERSION}: upgrade AgentLM or point at another store"
            )

    def save(self, traj: Trajectory, record_feedback: bool = True) -> None:
        """Insert or replace a trajectory (its feedback, if it carries one, is recorded too).

        `record_feedback=False` updates a stored run without recording its feedback again.
        """
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO trajectories "
                "(id, profile, model, created_at, reward, rating, stop_reason, writes_status, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    traj.id,
                    traj.profile,
                    traj.model,
                    traj.created_at,
                    traj.reward,
                    traj.feedback.rating if traj.feedback else None,
                    str(traj.stop_reason) if traj.stop_reason else None,
                    traj.writes_status,
                    traj.to_json(),
                ),
            )
            if traj.feedback is not None and record_feedback:
                self._insert_feedback(traj.id, traj.feedback)

    def set_feedback(self, trajectory_id: str, feedback: Feedback) -> bool:
        """Record feedback on a stored trajectory; False when there is no such trajectory."""
        with self._lock, self._conn:
            cursor = self._conn.execute(
                "UPDATE trajectories SET rating = ? WHERE id = ?", (feedback.rating, trajectory_id)
            )
            if cursor.rowcount == 0:
                return False
            self._insert_feedback(trajectory_id, feedback)
            return True

    def _insert_feedback(self, trajectory_id: str, fb: Feedback) -> None:
        self._conn.execute(
            "INSERT INTO feedback (trajectory_id, rating, comment, corrected_answer, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (trajectory_id, fb.rating, fb.comment, fb.corrected_answer, fb.created_at),
        )

    def get(self, trajectory_id: str) -> Trajectory | None:
        with self._lock:
            row = self._conn.execute(f"{_SELECT} WHERE t.id = ?", (trajectory_id,)).fetchone()
        return None if row is None else _trajectory(row)

    def list(self, limit: int = 50, offset: int = 0, **filters: Any) -> list[Trajectory]:
        """The newest trajectories first, filtered (see ``TrajectoryFilter``)."""
        where, args = TrajectoryFilter(**filters).sql()
        with self._lock:
            rows = self._conn.execute(
                f"{_SELECT} {where} ORDER BY t.created_at DESC, t.id LIMIT ? OFFSET ?", (*args, limit, offset)
            ).fetchall()
        return [_trajectory(r) for r in rows]

    def count(self, **filters: Any) -> int:
        where, args = TrajectoryFilter(**filters).sql()
        with self._lock:
            return self._conn.execute(f"SELECT count(*) FROM trajectories t {where}", args).fetchone()[0]

    def snapshot(self, page: int = 200, **filters: Any) -> Iterator[Trajectory]:
        """Every matching trajectory, oldest first, as of one moment; writers are never blocked.

        Reads on a separate read-only connection inside one read transaction (WAL keeps that
        view while the server goes on writing).
        """
        where, args = TrajectoryFilter(**filters).sql()
        uri = f"file:{pathname2url(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("BEGIN")
            cursor = conn.execute(f"{_SELECT} {where} ORDER BY t.created_at, t.id", args)
            while rows := cursor.fetchmany(page):
                yield from (_trajectory(r) for r in rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def iter_all(self) -> Iterator[Trajectory]:
        """Every trajectory, oldest first, in pages (so a large store is never all in memory)."""
        offset, page = 0, 500
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"{_SELECT} ORDER BY t.created_at, t.id LIMIT ? OFFSET ?", (page, offset)
                ).fetchall()
            yield from (_trajectory(r) for r in rows)
            if len(rows) < page:
                return
            offset += page

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM trajectories").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _trajectory(row: tuple) -> Trajectory:
    data, rating, comment, corrected_answer, created_at = row
    traj = Trajectory.from_json(data)
    if rating is not None:
        traj.feedback = Feedback(rating, comment, corrected_answer, created_at)
    return traj


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "StoreError", "TrajectoryFilter", "TrajectoryStore"]

"""The trajectory store: every agent run the server finished, and what users said about it.

SQLite in WAL mode, written only by the server: readers (``agentlm data export``, a notebook)
open it read-only while the server writes, which DuckDB would not allow. Each trajectory is kept
whole as JSON (``Trajectory.to_json``) beside indexed columns for listing and filtering. Feedback
lives in its own table, one row per submission, and the latest is merged into the trajectory on
read, so nothing a user said is ever overwritten. ``stats()`` aggregates for charts in SQL, reading
steps and durations out of the stored JSON (SQLite's json functions), so no run is loaded whole.

The schema is versioned: ``MIGRATIONS[v]`` takes a store from version v-1 to v, and opening a store
read-write applies the missing ones in one transaction, so a failed upgrade leaves the store as it
was. A store written by a newer AgentLM is refused with a ``StoreError`` instead of being misread.

Durability: WAL with ``synchronous=FULL``. Each commit fsyncs the WAL before ``save`` or
``set_feedback`` returns, so a run the API acknowledged survives a kill -9 of the server (which
``NORMAL`` would also survive) and a power cut or kernel crash (which ``NORMAL`` would not: it
syncs only at checkpoints). It costs about 0.2 ms a commit, against seconds of model time a run.
Threads share one writing connection behind a lock. ``snapshot()`` reads on its own read-only
connection inside one read transaction: a consistent view that never blocks the writer.
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
from agentlm.serve.protocol import DayStats, RunPoint, TrajectoryStats

# Version 1, the first released schema. Never edit it: later changes are migrations.
_V1 = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE trajectories (
        id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at REAL NOT NULL,
        reward REAL,
        rating INTEGER,               -- the latest feedback's rating, for filtering
        data TEXT NOT NULL            -- Trajectory.to_json()
    )""",
    "CREATE INDEX trajectories_profile_created ON trajectories (profile, created_at)",
    "CREATE INDEX trajectories_created ON trajectories (created_at)",
    """CREATE TABLE feedback (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        trajectory_id TEXT NOT NULL REFERENCES trajectories (id),
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL,
        corrected_answer TEXT,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX feedback_trajectory ON feedback (trajectory_id, seq)",
    "INSERT INTO schema_version VALUES (1)",
]

# MIGRATIONS[v]: the statements that take a version v-1 store to version v. Append only.
MIGRATIONS: dict[int, list[str]] = {
    2: [
        # Columns the trajectory filters need, filled from the stored JSON.
        "ALTER TABLE trajectories ADD COLUMN stop_reason TEXT",
        "ALTER TABLE trajectories ADD COLUMN writes_status TEXT",
        "UPDATE trajectories SET stop_reason = json_extract(data, '$.stop_reason'), "
        "writes_status = json_extract(data, '$.writes_status')",
        "CREATE INDEX trajectories_model_created ON trajectories (model, created_at)",
        "CREATE INDEX trajectories_rating ON trajectories (rating)",
        "CREATE INDEX trajectories_reward ON trajectories (reward)",
    ],
    3: [
        # A correction of one step (its index and the reply it should have been), and whether the
        # latest feedback corrects the run at all: the review queue is thumbs-down runs without one.
        "ALTER TABLE feedback ADD COLUMN corrected_step INTEGER",
        "ALTER TABLE feedback ADD COLUMN corrected_output TEXT",
        "ALTER TABLE trajectories ADD COLUMN corrected INTEGER NOT NULL DEFAULT 0",
        "UPDATE trajectories SET corrected = coalesce((SELECT corrected_answer IS NOT NULL "
        "AND corrected_answer != '' FROM feedback WHERE trajectory_id = trajectories.id "
        "ORDER BY seq DESC LIMIT 1), 0)",
        "CREATE INDEX trajectories_rating_corrected ON trajectories (rating, corrected)",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)
assert sorted(MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1)), "migrations must be numbered 2, 3, ..."

# The trajectory's JSON with its latest feedback, if any, as one row.
_SELECT = """
SELECT t.data, f.rating, f.comment, f.corrected_answer, f.created_at, f.corrected_step, f.corrected_output
FROM trajectories t
LEFT JOIN feedback f ON f.seq = (SELECT max(seq) FROM feedback WHERE trajectory_id = t.id)
"""

Rating = Literal[1, -1, "none"]

# Read from the stored JSON for the stats: a run's steps (actions and the answer) and its duration.
_STEPS = "coalesce(json_array_length(t.data, '$.steps'), 0)"
_SECONDS = "coalesce(json_extract(t.data, '$.duration_seconds'), 0.0)"


@dataclass(frozen=True)
class TrajectoryFilter:
    """Which trajectories: each given field narrows the result (times are unix seconds)."""

    profile: str | None = None
    model: str | None = None
    rating: Rating | None = None  # the latest feedback's; "none": no feedback yet
    min_reward: float | None = None
    max_reward: float | None = None
    since: float | None = None  # inclusive
    until: float | None = None  # exclusive
    stop_reason: str | None = None
    corrected: bool | None = None  # the latest feedback corrects the run (an answer or a step)

    def __post_init__(self) -> None:
        if self.rating not in (None, 1, -1, "none"):
            raise ValueError(f"rating must be 1, -1 or 'none', not {self.rating!r}")

    def sql(self) -> tuple[str, list[Any]]:
        """The WHERE clause (on ``trajectories t``) and its arguments."""
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
        if self.corrected is not None:
            clauses.append("t.corrected = ?")
            args.append(int(self.corrected))
        if self.rating == "none":
            clauses.append("t.rating IS NULL")
        elif self.rating is not None:
            clauses.append("t.rating = ?")
            args.append(self.rating)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


class StoreError(RuntimeError):
    """The store file cannot be used (missing, not a store, or written by a newer AgentLM)."""


class TrajectoryStore:
    """Trajectories and feedback in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no trajectory store at {self.path}")
            self._conn = self._connect_readonly()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA busy_timeout=5000")
            if not readonly:
                self._conn.execute("PRAGMA synchronous=FULL")  # see the module docstring
                self._migrate()
                # After the migration, which refuses a file that is not a store, so as not to
                # change a stranger's journal mode. WAL is a property of the file: it stays.
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._check_version(_version(self._conn))
        except sqlite3.DatabaseError as e:  # e.g. "file is not a database"
            self._conn.close()
            raise StoreError(f"{self.path} is not an AgentLM trajectory store: {e}") from e
        except BaseException:
            self._conn.close()
            raise

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = f"file:{pathname2url(str(self.path.resolve()))}?mode=ro"
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)

    def _migrate(self) -> None:
        """Create a new store, or bring an older one to SCHEMA_VERSION, in one transaction."""
        conn = self._conn
        conn.isolation_level = None  # explicit transaction: DDL and the version move together
        try:
            conn.execute("BEGIN IMMEDIATE")  # one opener migrates; another waits, then sees it done
            version = _version(conn)
            if version == 0:
                if conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                    raise StoreError(f"{self.path} is a SQLite file but not an AgentLM trajectory store")
                for statement in _V1:
                    conn.execute(statement)
                version = 1
            self._check_version(version)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                try:
                    for statement in MIGRATIONS[target]:
                        conn.execute(statement)
                except sqlite3.Error as e:
                    raise StoreError(
                        f"upgrading {self.path} from store schema version {version} to "
                        f"{SCHEMA_VERSION} failed at step {target} ({e}); the store was left as it "
                        "was: report this, with the AgentLM version, and use the older AgentLM meanwhile"
                    ) from e
                conn.execute("UPDATE schema_version SET version = ?", (target,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.isolation_level = ""

    def _check_version(self, version: int) -> None:
        if version == 0:
            raise StoreError(f"{self.path} is not an AgentLM trajectory store (no schema_version)")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {version}, written by a newer AgentLM; this "
                f"AgentLM reads up to version {SCHEMA_VERSION}: upgrade AgentLM or point at another store"
            )

    # --- writes -------------------------------------------------------------------------------

    def save(self, traj: Trajectory, record_feedback: bool = True) -> None:
        """Insert or replace a trajectory (its feedback, if it carries one, is recorded too).

        `record_feedback=False` updates a stored run without recording its feedback again.
        Returns once the commit is on disk.
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
            # The rating column follows the latest recorded feedback, which read merges in, even
            # when this copy of the run carries none (saved again without its feedback).
            self._conn.execute(
                "UPDATE trajectories SET (rating, corrected) = (SELECT coalesce(f.rating, t.rating), "
                "CASE WHEN f.seq IS NULL THEN t.corrected ELSE coalesce(f.corrected_answer, '') != '' "
                "OR f.corrected_step IS NOT NULL END "
                "FROM trajectories t LEFT JOIN feedback f ON f.seq = (SELECT max(seq) FROM feedback "
                "WHERE trajectory_id = ?1) WHERE t.id = ?1) WHERE id = ?1",
                (traj.id,),
            )

    def set_feedback(self, trajectory_id: str, feedback: Feedback) -> bool:
        """Record feedback on a stored trajectory; False when there is no such trajectory.

        Returns once the commit is on disk."""
        with self._lock, self._conn:
            cursor = self._conn.execute(
                "UPDATE trajectories SET rating = ?, corrected = ? WHERE id = ?",
                (feedback.rating, int(feedback.corrected), trajectory_id),
            )
            if cursor.rowcount == 0:
                return False
            self._insert_feedback(trajectory_id, feedback)
            return True

    def _insert_feedback(self, trajectory_id: str, fb: Feedback) -> None:
        self._conn.execute(
            "INSERT INTO feedback (trajectory_id, rating, comment, corrected_answer, created_at, "
            "corrected_step, corrected_output) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                trajectory_id,
                fb.rating,
                fb.comment,
                fb.corrected_answer,
                fb.created_at,
                fb.corrected_step,
                fb.corrected_output,
            ),  # fmt: skip
        )

    # --- reads --------------------------------------------------------------------------------

    def get(self, trajectory_id: str) -> Trajectory | None:
        with self._lock:
            row = self._conn.execute(f"{_SELECT} WHERE t.id = ?", (trajectory_id,)).fetchone()
        return None if row is None else _trajectory(row)

    def list(self, limit: int = 50, offset: int = 0, **filters: Any) -> list[Trajectory]:
        """A page of the trajectories matching ``filters`` (``TrajectoryFilter``'s fields), newest first."""
        where, args = TrajectoryFilter(**filters).sql()
        with self._lock:
            rows = self._conn.execute(
                f"{_SELECT} {where} ORDER BY t.created_at DESC, t.id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [_trajectory(r) for r in rows]

    def count(self, **filters: Any) -> int:
        """How many trajectories match (the same filters as ``list``, all pages together)."""
        where, args = TrajectoryFilter(**filters).sql()
        with self._lock:
            return self._conn.execute(f"SELECT count(*) FROM trajectories t {where}", args).fetchone()[0]

    def stats(self, points: int = 200, **filters: Any) -> TrajectoryStats:
        """Aggregates of the matching trajectories, computed in SQL from the stored JSON: per UTC
        day and model (runs, answered, thumbs up and down, mean steps and seconds), runs per stop
        reason, and the latest `points` runs' steps and duration, oldest first."""
        where, args = TrajectoryFilter(**filters).sql()
        steps, seconds = _STEPS, _SECONDS  # SQL expressions on t.data
        with self._lock:
            days = self._conn.execute(
                f"SELECT coalesce(date(t.created_at, 'unixepoch'), 'unknown') AS day, t.model, count(*), "
                "count(*) FILTER (WHERE t.stop_reason = 'answer'), count(*) FILTER (WHERE t.rating = 1), "
                f"count(*) FILTER (WHERE t.rating = -1), avg({steps}), avg({seconds}) "
                f"FROM trajectories t {where} GROUP BY day, t.model ORDER BY day, t.model",
                args,
            ).fetchall()
            reasons = self._conn.execute(
                f"SELECT coalesce(t.stop_reason, 'unknown') AS reason, count(*) FROM trajectories t "
                f"{where} GROUP BY reason ORDER BY count(*) DESC, reason",
                args,
            ).fetchall()
            latest = self._conn.execute(
                f"SELECT * FROM (SELECT t.id, t.created_at, t.model, t.profile, {steps}, {seconds} "
                f"FROM trajectories t {where} ORDER BY t.created_at DESC, t.id DESC LIMIT ?) "
                "ORDER BY 2, 1",
                (*args, points),
            ).fetchall()
        return TrajectoryStats(
            total=sum(n for _, n in reasons),
            days=[
                DayStats(
                    day=d,
                    model=m,
                    runs=n,
                    answered=a,
                    thumbs_up=up,
                    thumbs_down=down,
                    mean_steps=s,
                    mean_seconds=secs,
                )
                for d, m, n, a, up, down, s, secs in days
            ],
            stop_reasons=dict(reasons),
            points=[
                RunPoint(id=i, created_at=c, model=m, profile=p, steps=s, duration_seconds=secs)
                for i, c, m, p, s, secs in latest
            ],
        )

    def snapshot(self, page: int = 200, **filters: Any) -> Iterator[Trajectory]:
        """Every matching trajectory, oldest first, as of one moment; writers are never blocked.

        Reads on its own read-only connection inside one read transaction, which WAL keeps
        while the server goes on writing; rows come `page` at a time, so a large store is never
        all in memory. The connection is opened at the first ``next()`` and closed when the
        iterator is exhausted or closed.
        """
        where, args = TrajectoryFilter(**filters).sql()
        conn = self._connect_readonly()
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("BEGIN")  # the first read below fixes the snapshot
            cursor = conn.execute(f"{_SELECT} {where} ORDER BY t.created_at, t.id", args)
            while rows := cursor.fetchmany(page):
                yield from (_trajectory(r) for r in rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def iter_all(self) -> Iterator[Trajectory]:
        """Every trajectory, oldest first: ``snapshot()`` without filters."""
        return self.snapshot()

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


def _version(conn: sqlite3.Connection) -> int:
    """The store's schema version; 0 when it has none (a new, empty file)."""
    if not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'schema_version'").fetchone():
        return 0
    (version,) = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return version or 0


def _trajectory(row: tuple) -> Trajectory:
    data, rating, comment, corrected_answer, created_at, corrected_step, corrected_output = row
    traj = Trajectory.from_json(data)
    if rating is not None:
        traj.feedback = Feedback(
            rating, comment, corrected_answer, created_at, corrected_step, corrected_output
        )
    return traj


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "StoreError", "TrajectoryFilter", "TrajectoryStore"]

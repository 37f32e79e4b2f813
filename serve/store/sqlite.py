"""The embedded trajectory store: one SQLite file, written only by the server.

SQLite in WAL mode: readers (``agentlm data export``, a notebook) open it read-only while the
server writes, which DuckDB would not allow. Each trajectory is kept whole as JSON
(``Trajectory.to_json``) beside indexed columns for listing and filtering; ``stats()`` reads steps
and durations out of the stored JSON with SQLite's json functions, so no run is loaded whole.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

from agentlm.agent.trajectory import Trajectory
from agentlm.serve.store.base import (
    SCHEMA_VERSION,
    SELECT,
    Execute,
    StoreError,
    TrajectoryFilter,
    TrajectoryStore,
    check_version,
    migrate,
    trajectory,
)

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
assert sorted(MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1)), "migrations must be numbered 2, 3, ..."


class SQLiteStore(TrajectoryStore):
    """Trajectories and feedback in one SQLite file; safe to share between threads."""

    _DAY = "date(t.created_at, 'unixepoch')"
    _STEPS = "coalesce(json_array_length(t.data, '$.steps'), 0)"
    _SECONDS = "coalesce(json_extract(t.data, '$.duration_seconds'), 0.0)"

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.location = str(self.path)
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
        """Create a new store, or bring an older one to the current version, in one transaction."""
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
            migrate(conn.execute, self.location, version, SCHEMA_VERSION, MIGRATIONS, sqlite3.Error)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.isolation_level = ""

    def _check_version(self, version: int) -> None:
        check_version(self.location, version, SCHEMA_VERSION)

    @contextmanager
    def _transaction(self) -> Iterator[Execute]:
        with self._lock, self._conn:
            yield self._conn.execute

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
            cursor = conn.execute(f"{SELECT} {where} ORDER BY t.created_at, t.id", args)
            while rows := cursor.fetchmany(page):
                yield from (trajectory(r) for r in rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _version(conn: sqlite3.Connection) -> int:
    """The store's schema version; 0 when it has none (a new, empty file)."""
    if not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'schema_version'").fetchone():
        return 0
    (version,) = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return version or 0

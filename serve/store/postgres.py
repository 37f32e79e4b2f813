"""The shared trajectory store: PostgreSQL, for several API replicas, a trainer and the UI at once.

    AGENTLM_STORE_URL=postgresql://agentlm:secret@db:5432/agentlm agentlm serve

The tables, the queries and the filters are the SQLite store's (``base.py``); what differs is here.
Each trajectory is kept whole as JSON text, byte for byte as ``Trajectory.to_json`` wrote it, and
``stats()`` reads steps and durations out of it with PostgreSQL's json operators.

Connections come from a pool (psycopg 3), `POOL_SIZE` per process, each checked before use, so
a restarted PostgreSQL is reconnected to without restarting the API; while it is down, calls fail
with a ``StoreError`` that names the URL (never its password).

Schema: the first PostgreSQL store is created at version 3, the SQLite store's version when this
backend was added; ``MIGRATIONS[v]`` takes a store from version v-1 to v, and each new version
needs a migration here and in ``sqlite.py``. Replicas that start together migrate under one
advisory lock inside one transaction: the first migrates, the others wait, then find it done, and a
failed upgrade leaves the store as it was (PostgreSQL's DDL is transactional).

Durability: a commit returns once PostgreSQL has flushed it to its WAL (``synchronous_commit=on``,
its default), so whatever a replica acknowledged survives a kill -9 of that replica, and of the
database server too. ``snapshot()`` reads in one REPEATABLE READ transaction on a connection of
its own, through a server-side cursor: one moment of the store, a page at a time, writers never
blocked.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool

from agentlm.agent.trajectory import Trajectory
from agentlm.serve.store.base import (
    SCHEMA_VERSION,
    SELECT,
    Execute,
    StoreError,
    StoreInputError,
    TrajectoryFilter,
    TrajectoryStore,
    check_version,
    migrate,
    trajectory,
)

POOL_SIZE = 8  # connections per process, at most: 12 replicas fit PostgreSQL's default 100
CONNECT_TIMEOUT = 10  # seconds
POOL_WAIT = 5  # seconds a call waits for a connection while PostgreSQL is away, then fails (503)

# The store as this backend first created it, at CREATED_VERSION. Never edit it: later changes are
# migrations.
CREATED_VERSION = 3
SCHEMA = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE trajectories (
        id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        reward DOUBLE PRECISION,
        rating INTEGER,                   -- the latest feedback's rating, for filtering
        stop_reason TEXT,
        writes_status TEXT,
        corrected INTEGER NOT NULL DEFAULT 0,  -- the latest feedback corrects the run
        data TEXT NOT NULL                -- Trajectory.to_json()
    )""",
    "CREATE INDEX trajectories_profile_created ON trajectories (profile, created_at)",
    "CREATE INDEX trajectories_created ON trajectories (created_at)",
    "CREATE INDEX trajectories_model_created ON trajectories (model, created_at)",
    "CREATE INDEX trajectories_rating ON trajectories (rating)",
    "CREATE INDEX trajectories_reward ON trajectories (reward)",
    "CREATE INDEX trajectories_rating_corrected ON trajectories (rating, corrected)",
    """CREATE TABLE feedback (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        trajectory_id TEXT NOT NULL REFERENCES trajectories (id),
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL,
        corrected_answer TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        corrected_step INTEGER,
        corrected_output TEXT
    )""",
    "CREATE INDEX feedback_trajectory ON feedback (trajectory_id, seq)",
    f"INSERT INTO schema_version VALUES ({CREATED_VERSION})",
]
# MIGRATIONS[v]: the statements that take a version v-1 store to version v. Append only.
MIGRATIONS: dict[int, list[str]] = {}
assert sorted(MIGRATIONS) == list(range(CREATED_VERSION + 1, SCHEMA_VERSION + 1)), (
    "each schema version after the first PostgreSQL one needs its migration here"
)
_MIGRATION_LOCK = 0x61676E746C6D  # pg_advisory_xact_lock's key: "agntlm"


class PostgresStore(TrajectoryStore):
    """Trajectories and feedback in a PostgreSQL database; safe to share between threads and
    between processes on any number of machines."""

    _DAY = "to_char(to_timestamp(t.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    _STEPS = "coalesce(json_array_length(t.data::json -> 'steps'), 0)"
    _SECONDS = "coalesce(CAST(t.data::json ->> 'duration_seconds' AS DOUBLE PRECISION), 0.0)"

    def __init__(self, url: str, readonly: bool = False, pool_size: int = POOL_SIZE):
        self.url = url
        self.location = redact(url)
        self.readonly = readonly
        # Read-only is also the server's rule for these connections, not only this class's.
        self._options = {"options": "-c default_transaction_read_only=on"} if readonly else {}
        with self._connect() as conn:
            if readonly:
                check_version(self.location, _version(conn), SCHEMA_VERSION)
            else:
                self._migrate(conn)
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, **self._options},
            check=psycopg_pool.ConnectionPool.check_connection,  # a restarted server: reconnect
            timeout=POOL_WAIT,
            open=False,
            name="agentlm-store",
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)

    def _connect(self, autocommit: bool = True) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self.url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, **self._options
            )
        except psycopg.Error as e:
            raise StoreError(
                f"cannot reach the trajectory store at {self.location}: {str(e).strip()}; check the URL "
                "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE) and that PostgreSQL is running"
            ) from e

    def _migrate(self, conn: psycopg.Connection) -> None:
        """Create a new store, or bring an older one to SCHEMA_VERSION, in one transaction."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version = _version(conn)
            if version == 0:
                if conn.execute("SELECT to_regclass('trajectories')").fetchone()[0] is not None:
                    raise StoreError(
                        f"{self.location} has a trajectories table but no schema_version: it is not "
                        "an AgentLM trajectory store; point at another database"
                    )
                for statement in SCHEMA:
                    conn.execute(statement)
                version = CREATED_VERSION
            migrate(conn.execute, self.location, version, SCHEMA_VERSION, MIGRATIONS, psycopg.Error)

    @contextmanager
    def _transaction(self) -> Iterator[Execute]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield lambda query, args=(): conn.execute(_placeholders(query), args)
        except psycopg.DataError as e:
            raise StoreInputError(f"the trajectory store cannot hold this value: {str(e).strip()}") from e
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
            raise StoreError(
                f"the trajectory store at {self.location} did not answer: {str(e).strip()}; "
                "check that PostgreSQL is running and reachable"
            ) from e

    def snapshot(self, page: int = 200, **filters: Any) -> Iterator[Trajectory]:
        """Every matching trajectory, oldest first, as of one moment; writers are never blocked.

        One REPEATABLE READ, read-only transaction on a connection of its own (not the pool's: a
        slow reader must not hold one), read through a server-side cursor `page` rows at a time.
        The connection is opened at the first ``next()`` and closed when the iterator is
        exhausted or closed.
        """
        where, args = TrajectoryFilter(**filters).sql()
        with self._connect(autocommit=False) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.cursor(name="agentlm_snapshot") as cursor:
                cursor.execute(_placeholders(f"{SELECT} {where} ORDER BY t.created_at, t.id"), args)
                while rows := cursor.fetchmany(page):
                    yield from (trajectory(r) for r in rows)
            conn.commit()

    def close(self) -> None:
        self._pool.close()


def _version(conn: psycopg.Connection) -> int:
    """The store's schema version; 0 when it has none (a new, empty database)."""
    if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
        return 0
    (version,) = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return version or 0


@functools.cache
def _placeholders(query: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (the queries hold no other ``?``)."""
    return query.replace("?", "%s")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))

"""The trajectory store: every agent run the server finished, and what users said about it.

Two backends behind one interface (``TrajectoryStore``), chosen by where the store is:

- a file path: SQLite (``sqlite.py``), the embedded default, ``$AGENTLM_HOME/trajectories.sqlite3``;
- a ``postgresql://`` URL: PostgreSQL (``postgres.py``), shared by several API replicas, the
  trainer and the UI (``AGENTLM_STORE_URL``).

    with open_store(settings.store) as store:
        store.save(trajectory)
        store.set_feedback(trajectory.id, Feedback(1, "right"))
        for run in store.snapshot(rating=1): ...

Each trajectory is kept whole as JSON beside indexed columns for listing and filtering. Feedback
lives in its own table, one row per submission, and the latest is merged into the trajectory on
read, so nothing a user said is ever overwritten. Both backends version their schema and migrate
an older store when opened read-write; a store written by a newer AgentLM is refused.
"""

from __future__ import annotations

from pathlib import Path

from agentlm.serve.store.base import (
    SCHEMA_VERSION,
    StoreError,
    StoreInputError,
    TrajectoryFilter,
    TrajectoryStore,
)
from agentlm.serve.store.sqlite import SQLiteStore

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str | Path) -> bool:
    """Whether `location` names a PostgreSQL store rather than a SQLite file."""
    return str(location).startswith(URL_SCHEMES)


def open_store(location: str | Path, readonly: bool = False) -> TrajectoryStore:
    """The store at `location`: a ``postgresql://`` URL, or a SQLite file (created if missing,
    unless `readonly`)."""
    if is_url(location):
        from agentlm.serve.store.postgres import PostgresStore  # psycopg only when it is used

        return PostgresStore(str(location), readonly=readonly)
    return SQLiteStore(location, readonly=readonly)


__all__ = [
    "SCHEMA_VERSION",
    "SQLiteStore",
    "StoreError",
    "StoreInputError",
    "TrajectoryFilter",
    "TrajectoryStore",
    "is_url",
    "open_store",
]

"""SQL over DuckDB, as a langchain-core tool that cannot change the database.

The connection is opened read-only with external access (files, network, extensions) off and the
configuration locked, so no statement can reach past the database file or loosen those settings.
The read-only connection is the guard: a CTE like ``WITH d AS (DELETE ... RETURNING *) SELECT``
looks like a SELECT and still deletes, so statement-type checks alone would not be enough.

Results are rendered the way AgentBench's database task showed them (the Python repr of the rows,
e.g. ``[(12,)]``), which is what AgentLM checkpoints were trained on.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
from pathlib import Path
from typing import Any

import duckdb
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr

log = logging.getLogger(__name__)


class SQLError(Exception):
    """A statement that could not run; the message is shown to the model."""


class SQLInput(BaseModel):
    query: str = Field(description="Exactly one SQL statement.")


def _plain(value: Any) -> Any:
    """Dates and decimals as the plain values a model can read and copy."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def render_rows(rows: list[tuple], max_chars: int) -> str:
    text = repr([tuple(_plain(v) for v in row) for row in rows])
    if len(text) > max_chars:
        # AgentBench's cut: the first max_chars characters, then a marker.
        text = text[:max_chars] + "[TRUNCATED]"
    return text


class SQLTool(BaseTool):
    """Run one read-only SQL statement against a DuckDB database file."""

    name: str = "sql"
    description: str = (
        "Run exactly one read-only SQL statement (DuckDB dialect) against the database "
        "and return the result rows."
    )
    args_schema: type[BaseModel] = SQLInput
    database: Path
    timeout_seconds: float = 10.0
    max_rows: int = 200
    max_chars: int = 800

    _conn: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        # Opened on first use, so building a profile never touches the file.
        with self._lock:
            if self._conn is None:
                if not Path(self.database).is_file():
                    raise FileNotFoundError(
                        f"database {self.database} does not exist; build the sample with "
                        "`agentlm data hr-db` or point the profile at an existing DuckDB file"
                    )
                self._conn = duckdb.connect(
                    str(self.database),
                    read_only=True,
                    config={
                        "enable_external_access": False,
                        "autoinstall_known_extensions": False,
                        "autoload_known_extensions": False,
                        "lock_configuration": True,
                    },
                )
            return self._conn

    def _run(self, query: str, run_manager: Any = None) -> str:
        """Errors come back as text, so the model can read them and try again."""
        try:
            rows = self.run_rows(query)
        except SQLError as e:
            return f"Error: {e}"
        return render_rows(rows, self.max_chars)

    def run_rows(self, query: str) -> list[tuple]:
        """Run one statement and return up to max_rows rows; raises SQLError."""
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as e:
            raise SQLError(str(e).strip()) from e
        if len(statements) != 1:
            raise SQLError(f"send exactly one SQL statement per action (got {len(statements)}).")
        cursor = self._connection().cursor()
        timer = threading.Timer(self.timeout_seconds, cursor.interrupt)
        timer.start()
        try:
            cursor.execute(query)
            return cursor.fetchmany(self.max_rows) if cursor.description is not None else []
        except duckdb.InterruptException as e:
            raise SQLError(f"the query ran longer than {self.timeout_seconds:g} s and was stopped.") from e
        except duckdb.Error as e:
            raise SQLError(str(e).strip()) from e
        finally:
            timer.cancel()
            cursor.close()

    def schema(self) -> str:
        """CREATE TABLE statements for every table, for the model's prompt."""
        cursor = self._connection().cursor()
        try:
            rows = cursor.execute(
                "SELECT sql FROM duckdb_tables() WHERE NOT internal ORDER BY table_name"
            ).fetchall()
        finally:
            cursor.close()
        return "\n".join(r[0].strip() for r in rows)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

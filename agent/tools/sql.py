"""SQL over DuckDB, as a langchain-core tool that cannot change the database on its own.

Every connection to the real database is opened read-only with external access (files, network,
extensions) off and the configuration locked, so no statement can reach past the database file or
loosen those settings. The read-only connection is the guard: a CTE like
``WITH d AS (DELETE ... RETURNING *) SELECT`` looks like a SELECT and still deletes, so
statement-type checks alone would not be enough.

Writes (``writes="scratch"``). The first statement the read-only connection refuses as a write
makes the tool copy the database file to a private scratch file and run that statement, and every
later one (reads too), there, so the agent sees its own changes while the real file stays as it
was. The tool keeps the write statements (``pending_writes``); ``changes()`` shows what they did,
table by table, and ``apply_writes(approved_by)`` is the explicit approval step that replays them
on the real file in one transaction and commits only if the result equals the scratch copy.
``discard_writes()`` drops them. With ``writes="deny"`` (the default) a write is an error.

What each mode allows:

- DML (INSERT/UPDATE/DELETE/MERGE, also inside a CTE) and DDL on the database's own tables
  (CREATE/DROP/ALTER TABLE, CREATE VIEW/MACRO/SEQUENCE): an error with ``deny``; a pending write on
  the scratch copy with ``scratch``, applied only after approval.
- Temporary objects (CREATE TEMP TABLE/VIEW/MACRO and writes to them) work in both modes; they live
  in the tool's session and are gone after ``apply_writes``/``discard_writes``/``close``.
- Never, in either mode (refused before running, with a reason): ATTACH/DETACH, USE, SET/RESET,
  INSTALL/LOAD, COPY, EXPORT DATABASE, BEGIN/COMMIT/ROLLBACK (each statement is its own
  transaction), PREPARE/EXECUTE. File and URL readers (``read_csv``, ``glob``, ``FROM 'file'``),
  IMPORT DATABASE and settings PRAGMAs fail inside DuckDB because external access is off and the
  configuration is locked.

Results are rendered the way AgentBench's database task showed them (``render="repr"``: the Python
repr of the rows, e.g. ``[(12,)]``, which is what AgentLM checkpoints were trained on) or as a
compact text table (``render="table"``).
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import logging
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr

log = logging.getLogger(__name__)

__all__ = [
    "CONNECTION_CONFIG",
    "ApplyReport",
    "QueryResult",
    "SQLError",
    "SQLInput",
    "SQLTool",
    "TableChange",
    "WriteApplyError",
    "render_rows",
    "render_table",
]

# Every connection the tool opens, the writable ones included.
CONNECTION_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # DuckDB's default is 80 % of the machine's memory, all of it in the serving process: a join
    # without its condition, counted distinct over 9M rows, took 940 MB. Past this limit it
    # spills to disk or fails with a clear "Out of Memory Error" the agent reads.
    "memory_limit": "256MB",
    "lock_configuration": True,
}

_ST = duckdb.StatementType
# Refused before running in both modes: they reach outside the database file, change the
# session's settings or span calls (transactions, prepared statements), none of which a replay
# on the real file could reproduce.
_REFUSED: dict[Any, str] = {
    _ST.ATTACH: "ATTACH is not available: the tool works on one database",
    _ST.DETACH: "DETACH is not available: the tool works on one database",
    _ST.SET: "settings cannot be changed here (SET/RESET/USE are not available)",
    _ST.LOAD: "extensions cannot be installed or loaded here",
    _ST.EXTENSION: "extensions cannot be installed or loaded here",
    _ST.COPY: "COPY is not available: the tool cannot read or write files",
    _ST.COPY_DATABASE: "COPY DATABASE is not available: the tool works on one database",
    _ST.EXPORT: "EXPORT DATABASE is not available: the tool cannot write files",
    _ST.TRANSACTION: "each statement runs in its own transaction; BEGIN/COMMIT/ROLLBACK are not available",
    _ST.PREPARE: "prepared statements are not available; send the statement itself",
    _ST.EXECUTE: "prepared statements are not available; send the statement itself",
}
# Statement types that change data or the catalog when they succeed.
_WRITE_TYPES = {
    _ST.INSERT,
    _ST.UPDATE,
    _ST.DELETE,
    _ST.CREATE,
    _ST.CREATE_FUNC,
    _ST.DROP,
    _ST.ALTER,
    _ST.MERGE_INTO,
}
# DML inside a SELECT (a data-modifying CTE) as json_serialize_sql's parse tree shows it.
_DML_NODE = re.compile(r'"type":"(INSERT|UPDATE|DELETE|MERGE_INTO)_QUERY_NODE"')
_READ_ONLY_REFUSAL = re.compile(r'Cannot execute statement of type "(\w+)".*read-only mode')


class SQLError(Exception):
    """A statement that could not run; the message is shown to the model."""


class WriteApplyError(SQLError):
    """Approved writes could not be applied; the real database was left as it was."""


class _ReadOnlyRefusal(Exception):
    def __init__(self, statement_type: str):
        super().__init__(statement_type)
        self.statement_type = statement_type


class SQLInput(BaseModel):
    query: str = Field(description="Exactly one SQL statement.")


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]  # at most max_rows
    total_rows: int | None  # rows the statement returned; None when over the counting cap


@dataclass
class TableChange:
    """Rows of one table that the pending writes add and remove (multisets, order-free)."""

    added: list[tuple] = field(default_factory=list)
    removed: list[tuple] = field(default_factory=list)
    note: str | None = None  # set when the table was too big to compare row by row


@dataclass
class ApplyReport:
    approved_by: str
    statements: list[str]
    changes: dict[str, TableChange]


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


def _cell(value: Any, width: int) -> str:
    text = "NULL" if value is None else str(_plain(value))
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(result: QueryResult, max_chars: int, cell_chars: int = 40) -> str:
    """Header, one `|`-separated line a row, and a count line; lines dropped to fit max_chars."""
    if not result.columns:
        return "(0 rows)"
    header = " | ".join(_cell(c, cell_chars) for c in result.columns)
    lines = [" | ".join(_cell(v, cell_chars) for v in row) for row in result.rows]
    total = result.total_rows
    while True:
        shown = len(lines)
        if total == shown:
            footer = f"({shown} row{'' if shown == 1 else 's'})"
        else:
            of = "more than " + str(len(result.rows)) if total is None else str(total)
            footer = f"(first {shown} of {of} rows)"
        text = "\n".join([header, *lines, footer])
        if len(text) <= max_chars or not lines:
            return text
        lines.pop()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _statement_type(statement: Any) -> Any | None:
    try:
        return statement.type
    except ValueError:  # a type this duckdb's Python enum does not know (e.g. UPDATE EXTENSIONS)
        return None


class SQLTool(BaseTool):
    """Run one SQL statement against a DuckDB database file; writes only on a scratch copy."""

    name: str = "sql"
    description: str = (
        "Run exactly one SQL statement (DuckDB dialect) against the database and return the result rows."
    )
    args_schema: type[BaseModel] = SQLInput
    database: Path
    timeout_seconds: float = 10.0
    max_rows: int = 200
    max_chars: int = 800
    render: Literal["repr", "table"] = "repr"
    writes: Literal["deny", "scratch"] = "deny"
    cell_chars: int = 40  # table render: longer values are shortened
    count_rows_up_to: int = 100_000  # table render counts the rows it does not show up to this
    compare_rows_up_to: int = 100_000  # changes(): tables bigger than this are not diffed row by row

    _conn: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)  # the real file, read-only
    _scratch: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)
    _scratch_dir: Path | None = PrivateAttr(default=None)
    _pending: list[str] = PrivateAttr(default_factory=list)
    _session_log: list[str] = PrivateAttr(default_factory=list)  # temp-object statements before the copy
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    # --- connections ------------------------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        # Opened on first use, so building a profile never touches the file.
        with self._lock:
            if self._conn is None:
                if not Path(self.database).is_file():
                    raise FileNotFoundError(
                        f"database {self.database} does not exist; build a sample with `agentlm data hr-db` "
                        "or `agentlm data scheduling-db`, or point the profile at an existing DuckDB file"
                    )
                self._conn = duckdb.connect(str(self.database), read_only=True, config=CONNECTION_CONFIG)
            return self._conn

    def _close_real(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _view(self) -> duckdb.DuckDBPyConnection:
        """The connection that shows the database as the agent sees it."""
        return self._scratch if self._scratch is not None else self._connection()

    def _start_scratch(self) -> None:
        self._scratch_dir = Path(tempfile.mkdtemp(prefix="agentlm-sql-"))
        target = self._scratch_dir / "scratch.duckdb"
        # Closed first: DuckDB lets one process hold a file in one configuration only, and the
        # real file must stay free for apply_writes (and for other writers) from now on.
        self._close_real()
        shutil.copyfile(self.database, target)
        wal = Path(str(self.database) + ".wal")
        if wal.is_file():
            shutil.copyfile(wal, Path(str(target) + ".wal"))
        self._scratch = duckdb.connect(str(target), config=CONNECTION_CONFIG)
        for statement in self._session_log:  # the agent's temp tables move with it
            self._scratch.execute(statement)
        log.info("sql tool: writes go to scratch copy %s", target)

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None
        self._pending.clear()
        self._session_log.clear()

    # --- running statements -----------------------------------------------------------------

    def prepare(self, query: str) -> str:
        """Turn the model's text into DuckDB SQL; subclasses translate other dialects here."""
        return query

    def _run(self, query: str, run_manager: Any = None) -> str:
        """Errors come back as text, so the model can read them and try again."""
        try:
            result = self.query(query)
        except SQLError as e:
            return f"Error: {e}"
        if self.render == "table":
            return render_table(result, self.max_chars, self.cell_chars)
        return render_rows(result.rows, self.max_chars)

    def run_rows(self, query: str) -> list[tuple]:
        """Run one statement and return up to max_rows rows; raises SQLError."""
        return self.query(query).rows

    def query(self, query: str) -> QueryResult:
        """Run one statement; raises SQLError (the message is meant for the model)."""
        text = self.prepare(query)
        try:
            statements = duckdb.extract_statements(text)
        except duckdb.Error as e:
            raise SQLError(str(e).strip()) from e
        if len(statements) != 1:
            raise SQLError(f"send exactly one SQL statement per action (got {len(statements)}).")
        kind = _statement_type(statements[0])
        if kind is None:
            raise SQLError("this kind of statement is not available here.")
        if kind in _REFUSED:
            raise SQLError(_REFUSED[kind] + ".")
        with self._lock:
            if self._scratch is not None:
                result = self._execute(self._scratch, text)
                if self._writes_data(self._scratch, text, kind):
                    self._pending.append(text)
                return result
            try:
                result = self._execute(self._connection(), text)
            except _ReadOnlyRefusal as e:
                if self.writes == "deny":
                    raise SQLError(
                        f"this assistant cannot change the database (the statement is a {e.statement_type}; "
                        "only reading is allowed)."
                    ) from None
                self._start_scratch()
                assert self._scratch is not None
                result = self._execute(self._scratch, text)
                self._pending.append(text)
                return result
            # It ran on the read-only connection, so whatever it wrote was a temporary object.
            if self._writes_data(self._conn, text, kind):
                self._session_log.append(text)
            return result

    def _execute(self, conn: duckdb.DuckDBPyConnection, text: str) -> QueryResult:
        timer = threading.Timer(self.timeout_seconds, conn.interrupt)
        timer.start()
        try:
            conn.execute(text)
            if conn.description is None:
                return QueryResult([], [], 0)
            columns = [d[0] for d in conn.description]
            rows = conn.fetchmany(self.max_rows)
            total: int | None = len(rows)
            if len(rows) == self.max_rows:
                while total is not None:
                    more = len(conn.fetchmany(10_000))
                    if not more:
                        break
                    total += more
                    if total > self.count_rows_up_to:
                        total = None
            return QueryResult(columns, rows, total)
        except duckdb.InterruptException as e:
            raise SQLError(f"the query ran longer than {self.timeout_seconds:g} s and was stopped.") from e
        except duckdb.Error as e:
            message = str(e).strip()
            refusal = _READ_ONLY_REFUSAL.search(message)
            if refusal:
                raise _ReadOnlyRefusal(refusal.group(1)) from e
            raise SQLError(message) from e
        finally:
            timer.cancel()

    @staticmethod
    def _writes_data(conn: duckdb.DuckDBPyConnection, text: str, kind: Any) -> bool:
        if kind in _WRITE_TYPES:
            return True
        if kind != _ST.SELECT:
            return False  # EXPLAIN, PRAGMA, CALL (CHECKPOINT), VACUUM, ANALYZE change no content
        try:
            tree = conn.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0]
        except duckdb.Error:
            return True  # cannot tell: replaying a read is harmless, missing a write is not
        return bool(_DML_NODE.search(tree)) or '"error":true' in tree

    # --- the database as the agent sees it ----------------------------------------------------

    def schema(self) -> str:
        """CREATE TABLE statements for every table, for the model's prompt."""
        with self._lock:
            rows = (
                self._view()
                .execute(
                    "SELECT sql FROM duckdb_tables() WHERE NOT internal AND NOT temporary ORDER BY table_name"
                )
                .fetchall()
            )
        return "\n".join(r[0].strip() for r in rows)

    def table_rows(self, table: str) -> list[tuple]:
        """Every row of `table` as the agent sees it (the scratch copy once it wrote)."""
        with self._lock:
            try:
                return self._view().execute(f"SELECT * FROM {_quote(table)}").fetchall()
            except duckdb.Error as e:
                raise SQLError(str(e).strip()) from e

    @property
    def pending_writes(self) -> list[str]:
        """The write statements run on the scratch copy, in order, waiting for approval."""
        return list(self._pending)

    @staticmethod
    def _tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
        rows = conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE NOT internal AND NOT temporary AND database_name = current_database()"
        ).fetchall()
        return sorted(t if s == "main" else f"{s}.{t}" for s, t in rows)

    @staticmethod
    def _qualified(name: str) -> str:
        schema, _, table = name.rpartition(".") if "." in name else ("main", "", name)
        return f"{_quote(schema)}.{_quote(table)}"

    def _fingerprints(self, conn: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
        """Per table: column names and types, row count, and an order-free sum of row hashes."""
        out = {}
        for name in self._tables(conn):
            ref = self._qualified(name)
            columns = tuple(conn.execute(f"DESCRIBE {ref}").fetchall())
            count, digest = conn.execute(
                f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM {ref} AS t"
            ).fetchone()
            out[name] = (columns, count, digest)
        return out

    def changes(self) -> dict[str, TableChange]:
        """What the pending writes did, per table, compared with the real database."""
        with self._lock:
            if self._scratch is None:
                return {}
            try:
                return self._diff(self._connection(), self._scratch)
            finally:
                self._close_real()

    def _diff(
        self, real: duckdb.DuckDBPyConnection, scratch: duckdb.DuckDBPyConnection
    ) -> dict[str, TableChange]:
        before, after = self._tables(real), self._tables(scratch)
        out: dict[str, TableChange] = {}
        for name in sorted(set(before) | set(after)):
            sizes = [
                conn.execute(f"SELECT count(*) FROM {self._qualified(name)}").fetchone()[0]
                if name in tables
                else 0
                for conn, tables in ((real, before), (scratch, after))
            ]
            if max(sizes) > self.compare_rows_up_to:
                if self._fingerprints_of(real, name, before) != self._fingerprints_of(scratch, name, after):
                    out[name] = TableChange(
                        note=f"changed; {max(sizes)} rows is over the {self.compare_rows_up_to}-row "
                        "limit for listing rows"
                    )
                continue
            old = self._multiset(real, name) if name in before else collections.Counter()
            new = self._multiset(scratch, name) if name in after else collections.Counter()
            if old != new:
                out[name] = TableChange(
                    added=list((new - old).elements()), removed=list((old - new).elements())
                )
        return out

    def _fingerprints_of(self, conn: duckdb.DuckDBPyConnection, name: str, tables: list[str]) -> tuple | None:
        return self._fingerprints(conn).get(name) if name in tables else None

    def _multiset(self, conn: duckdb.DuckDBPyConnection, name: str) -> collections.Counter:
        rows = conn.execute(f"SELECT * FROM {self._qualified(name)}").fetchall()
        return collections.Counter(tuple(_hashable(v) for v in row) for row in rows)

    # --- approval ---------------------------------------------------------------------------

    def apply_writes(self, approved_by: str) -> ApplyReport:
        """Make the pending writes real: replay them on the real file in one transaction.

        Commits only when every table then equals the scratch copy; otherwise rolls back and
        raises WriteApplyError (the real database is unchanged). On success the scratch copy is
        dropped and the tool reads the real file again.
        """
        if not approved_by.strip():
            raise ValueError("apply_writes needs the name of whoever approved the writes")
        with self._lock:
            if self._scratch is None or not self._pending:
                self._drop_scratch()
                return ApplyReport(approved_by, [], {})
            statements = list(self._pending)
            changes = self.changes()
            expected = self._fingerprints(self._scratch)
            self._close_real()
            real = duckdb.connect(str(self.database), config=CONNECTION_CONFIG)
            try:
                real.execute("BEGIN TRANSACTION")
                for statement in self._session_log + statements:
                    try:
                        self._execute(real, statement)
                    except (SQLError, _ReadOnlyRefusal) as e:
                        real.execute("ROLLBACK")
                        raise WriteApplyError(
                            f"replaying {statement!r} on the real database failed ({e}); nothing was changed"
                        ) from e
                actual = self._fingerprints(real)
                if actual != expected:
                    differ = sorted(
                        n for n in set(actual) | set(expected) if actual.get(n) != expected.get(n)
                    )
                    real.execute("ROLLBACK")
                    raise WriteApplyError(
                        "replaying the approved statements on the real database did not reproduce the "
                        f"scratch copy (tables {', '.join(differ)} differ: the database changed meanwhile "
                        "or a statement is not deterministic); nothing was changed. Discard the writes "
                        "and run them again."
                    )
                real.execute("COMMIT")
            finally:
                real.close()
            log.info("sql tool: %d approved statements applied by %s", len(statements), approved_by)
            self._drop_scratch()
            return ApplyReport(approved_by, statements, changes)

    def discard_writes(self) -> None:
        """Drop the scratch copy and the pending writes; the tool reads the real file again."""
        with self._lock:
            self._drop_scratch()

    def close(self) -> None:
        with self._lock:
            self._close_real()
            self._drop_scratch()

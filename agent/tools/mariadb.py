"""A private MariaDB server for AgentBench's database tasks, and the SQL tool an agent uses on it.

AgentBench runs dbbench on MySQL 8 in Docker. Here the environment starts MariaDB (apt's
``mariadb-server``: its binaries only, never the system service) as a child process: a fresh data
directory from ``mariadb-install-db``, a Unix socket in a private (0700) folder, no TCP port, and
MySQL 8's defaults where MariaDB's differ (utf8mb4 with an accent- and case-insensitive, NO PAD
collation, MySQL 8's sql_mode, 1024-character ``group_concat``). Start-up takes about half a
second; one server serves every task of a process.

Each task gets a database of its own and a user that can reach only that database, so an agent
cannot read or change another task's tables (``SHOW DATABASES`` shows it its own). Statements run
as AgentBench ran them: a fresh connection per statement (AgentBench reconnected before each
one), autocommit, one statement per call; results are the repr of the rows, errors are
mysql.connector's ``errno (sqlstate): message`` text, both cut at 800 characters.

Bounds: a statement is killed from the server's admin connection after ``timeout_seconds`` (the
session's ``max_statement_time`` is set too, but a statement may override it); at most
``max_rows`` rows are read, and a statement with more has its connection closed unread.

The server stops when the process does, even when the process is killed: it runs under a small
shell that waits on a pipe from this process and, when the pipe closes, stops the server and
deletes its data directory.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, PrivateAttr

from agentlm.agent.tools.sql import QueryResult, SQLError, SQLInput, render_rows

log = logging.getLogger(__name__)

__all__ = [
    "MariaDBServer",
    "MariaDBTool",
    "MariaDBUnavailable",
    "TaskDatabase",
    "ident",
    "mariadb_binaries",
    "shared_server",
]

# Where Debian's mariadb-server puts its binaries, beside PATH (sbin is not on a user's PATH).
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/bin"])
COLLATION = "utf8mb4_unicode_520_nopad_ci"  # nearest to MySQL 8's utf8mb4_0900_ai_ci
# MySQL 8's defaults, which AgentBench's labels were computed under, where MariaDB's differ.
# (MySQL 8's utf8mb4_0900_ai_ci is accent- and case-insensitive and NO PAD: "a " != "a".)
MYSQL8_OPTIONS = (
    "--character-set-server=utf8mb4",
    f"--collation-server={COLLATION}",
    "--sql-mode=ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION",
    "--group-concat-max-len=1024",  # MariaDB's default is 1 MB; AgentBench's table hash is cut at 1024
)
# Small and fast: throwaway data, so no durability and little memory.
LEAN_OPTIONS = (
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-name-resolve",
    "--max-connections=200",
    "--max-allowed-packet=16M",
)
_START_TIMEOUT = 30.0
# The shell the server runs under: it stops the server and removes its data when stdin (a pipe
# from the Python process) closes, which happens however that process ends.
_GUARD = (
    'mariadbd "$@" & pid=$!; read -r _; kill "$pid" 2>/dev/null; wait "$pid"; rm -rf "$AGENTLM_MARIADB_DIR"'
)


class MariaDBUnavailable(RuntimeError):
    """MariaDB is not installed here, or its server did not start; the message says what to do."""


def mariadb_binaries() -> tuple[str, str] | None:
    """(mariadbd, mariadb-install-db) when MariaDB's server is installed, else None."""
    server = shutil.which("mariadbd", path=_SEARCH)
    install = shutil.which("mariadb-install-db", path=_SEARCH)
    return (server, install) if server and install else None


def _error_text(e: pymysql.MySQLError) -> str:
    """mysql.connector's wording, which AgentBench showed the agent: ``1054 (42S22): Unknown ...``."""
    if len(e.args) >= 2 and isinstance(e.args[0], int):
        state = getattr(e, "sqlstate", None)
        return f"{e.args[0]} ({state}): {e.args[1]}" if state else f"{e.args[0]}: {e.args[1]}"
    return str(e)


def _abandon(conn: pymysql.connections.Connection) -> None:
    """Close a connection in the middle of a result without reading the rest of it.

    pymysql reads an unbuffered result to its end before closing (every row of a billion-row
    join); marking the result finished first makes it drop the socket instead.
    """
    result = conn._result
    if result is not None:
        result.unbuffered_active = False
    conn._force_close()


def ident(name: str) -> str:
    """A MySQL identifier, backquoted."""
    return "`" + name.replace("`", "``") + "`"


class MariaDBServer:
    """One mariadbd child process with a throwaway data directory, reachable on a private socket."""

    def __init__(self) -> None:
        binaries = mariadb_binaries()
        if binaries is None:
            raise MariaDBUnavailable(
                "MariaDB is not installed: install it with `apt-get install mariadb-server` (bash "
                "scripts/setup.sh does), or set AGENTLM_DB_ENGINE=duckdb to run the tasks on DuckDB"
            )
        self._server, self._install = binaries
        # mkdtemp makes the folder 0700: only this user reaches the socket in it.
        self.dir = Path(tempfile.mkdtemp(prefix="agentlm-mariadb-"))
        self.socket = self.dir / "mysqld.sock"
        self._log = self.dir / "error.log"
        self._lock = threading.Lock()
        self._admin: pymysql.connections.Connection | None = None
        user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root without it
        common = ["--no-defaults", f"--datadir={self.dir / 'data'}", f"--tmpdir={self.dir}", *user]
        started = time.monotonic()
        try:
            setup = subprocess.run(
                [self._install, *common, "--auth-root-authentication-method=normal", "--skip-test-db",
                 *LEAN_OPTIONS],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise MariaDBUnavailable(f"mariadb-install-db could not run: {e}") from e
        if setup.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise MariaDBUnavailable(
                f"mariadb-install-db failed ({setup.returncode}): {(setup.stderr or setup.stdout)[-800:]}"
            )
        argv = [
            *common, *MYSQL8_OPTIONS, *LEAN_OPTIONS, "--skip-networking", f"--socket={self.socket}",
            f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={self._log}",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            ["sh", "-c", _GUARD, "sh", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PATH": os.path.dirname(self._server) + os.pathsep + _SEARCH,
                 "AGENTLM_MARIADB_DIR": str(self.dir)},
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
        )  # fmt: skip
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        log.info("mariadb: server up in %.2f s on %s", time.monotonic() - started, self.socket)

    def _wait_ready(self, started: float) -> None:
        deadline = started + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise MariaDBUnavailable(f"the MariaDB server exited at start: {self._log_tail()}")
            try:
                self._admin = self.connect("root", "")
                return
            except pymysql.MySQLError as e:
                if time.monotonic() > deadline:
                    raise MariaDBUnavailable(
                        f"the MariaDB server did not accept connections within {_START_TIMEOUT:g} s "
                        f"({_error_text(e)}): {self._log_tail()}"
                    ) from e
                time.sleep(0.02)

    def _log_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-1200:]
        except OSError:
            return "(no server log)"

    def connect(self, user: str, password: str, database: str | None = None, **options: Any):
        return pymysql.connect(
            unix_socket=str(self.socket), user=user, password=password, database=database,
            charset="utf8mb4", collation=COLLATION, autocommit=True, connect_timeout=10, **options,
        )  # fmt: skip

    def admin(self, sql: str, args: Sequence[Any] | None = None) -> list[tuple]:
        """Run one statement as root (creating and dropping task databases, killing statements)."""
        with self._lock:
            if self._admin is None:
                raise MariaDBUnavailable("the MariaDB server was stopped")
            try:
                self._admin.ping()
            except pymysql.MySQLError:  # dropped (a server-side timeout): a new one
                self._admin = self.connect("root", "")
            with self._admin.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
        if self._process.poll() is None and self._process.stdin is not None:
            self._process.stdin.close()  # the guard stops the server and removes the data
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
                self._process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: MariaDBServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> MariaDBServer:
    """The process's MariaDB server, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive():
            _shared = MariaDBServer()
            atexit.register(_shared.stop)
        return _shared


class TaskDatabase:
    """A database and a user that can reach only it; dropped (with the user) by ``close``."""

    def __init__(self, server: MariaDBServer, create: Sequence[tuple[str, Sequence[Any] | None]] = ()):
        self.server = server
        token = secrets.token_hex(6)
        self.name, self.user, self.password = f"task_{token}", f"agent_{token}", secrets.token_hex(16)
        server.admin(f"CREATE DATABASE {ident(self.name)}")
        try:
            server.admin("CREATE USER %s@'localhost' IDENTIFIED BY %s", (self.user, self.password))
            server.admin(f"GRANT ALL PRIVILEGES ON {ident(self.name)}.* TO %s@'localhost'", (self.user,))
            with self.connect() as conn, conn.cursor() as cursor:
                for sql, args in create:
                    cursor.execute(sql, args)
        except BaseException:
            self.close()
            raise

    def connect(self, **options: Any):
        return self.server.connect(self.user, self.password, self.name, **options)

    def run(self, sql: str, args: Sequence[Any] | None = None) -> list[tuple]:
        """One statement as the task's user, all rows; raises pymysql.MySQLError."""
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def close(self) -> None:
        if not self.server.alive():
            return
        for (thread,) in self.server.admin(
            "SELECT id FROM information_schema.processlist WHERE user = %s", (self.user,)
        ):
            with contextlib.suppress(pymysql.MySQLError):  # it may have ended on its own meanwhile
                self.server.admin(f"KILL CONNECTION {int(thread)}")
        self.server.admin(f"DROP DATABASE IF EXISTS {ident(self.name)}")
        self.server.admin("DROP USER IF EXISTS %s@'localhost'", (self.user,))


class MariaDBTool(BaseTool):
    """Run one MySQL statement on a task's MariaDB database, as AgentBench's dbbench did."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "sql"
    description: str = "Run exactly one MySQL statement against the database and return the result rows."
    args_schema: type[BaseModel] = SQLInput
    database: TaskDatabase
    timeout_seconds: float = 10.0
    max_rows: int = 200
    max_chars: int = 800
    render: str = "repr"  # the only rendering: AgentBench's

    _closed: bool = PrivateAttr(default=False)

    def _run(self, query: str, run_manager: Any = None) -> str:
        try:
            result = self.query(query)
        except SQLError as e:
            text = str(e)
            return text if len(text) <= self.max_chars else text[: self.max_chars] + "[TRUNCATED]"
        return render_rows(result.rows, self.max_chars)

    def run_rows(self, query: str) -> list[tuple]:
        return self.query(query).rows

    def query(self, query: str) -> QueryResult:
        """Run one statement on a fresh connection; raises SQLError with MySQL's error text."""
        if self._closed:
            raise SQLError("this task's database is closed")
        server = self.database.server
        try:
            conn = self.database.connect(
                cursorclass=pymysql.cursors.SSCursor,
                init_command=f"SET SESSION max_statement_time = {self.timeout_seconds:g}",
            )
        except pymysql.MySQLError as e:
            raise SQLError(_error_text(e)) from e
        thread = conn.thread_id()
        stopped = threading.Event()

        def kill() -> None:
            stopped.set()
            with contextlib.suppress(pymysql.MySQLError):
                server.admin(f"KILL QUERY {int(thread)}")

        timer = threading.Timer(self.timeout_seconds + 1.0, kill)
        timer.start()
        began = time.monotonic()
        cursor = conn.cursor()
        unread = False
        try:
            cursor.execute(query)
            if cursor.description is None:
                result = QueryResult([], [], 0)
            else:
                rows = list(cursor.fetchmany(self.max_rows))
                unread = len(rows) == self.max_rows and cursor.fetchone() is not None
                result = QueryResult([d[0] for d in cursor.description], rows, None if unread else len(rows))
        except pymysql.MySQLError as e:
            if not (stopped.is_set() or e.args[:1] == (1969,)):  # 1969: max_statement_time exceeded
                raise SQLError(_error_text(e)) from e
            result = None
        finally:
            timer.cancel()
            if unread:  # the server is still sending rows: drop the connection, end the statement
                _abandon(conn)
                with contextlib.suppress(pymysql.MySQLError):
                    server.admin(f"KILL CONNECTION {int(thread)}")
            else:
                with contextlib.suppress(pymysql.MySQLError):
                    cursor.close()
                    conn.close()
        # An interrupted SLEEP or BENCHMARK returns a value instead of failing: time tells.
        if result is None or stopped.is_set() or time.monotonic() - began >= self.timeout_seconds:
            raise SQLError(f"the statement ran longer than {self.timeout_seconds:g} s and was stopped.")
        return result

    def table_rows(self, table: str) -> list[tuple]:
        """Every row of one table of the task's database (for scoring; not bounded by max_rows)."""
        try:
            return self.database.run(f"SELECT * FROM {ident(table)}")
        except pymysql.MySQLError as e:
            raise SQLError(_error_text(e)) from e

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.database.close()

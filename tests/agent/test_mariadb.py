"""The MariaDB server behind AgentBench's database tasks: MySQL 8's semantics, one database and
user per task that reach nothing else, bounded statements, and no server left behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest
from waiting import eventually

from agentlm.agent.tools.mariadb import (
    MariaDBServer,
    MariaDBTool,
    MariaDBUnavailable,
    TaskDatabase,
    shared_server,
)

PEOPLE = [
    ("CREATE TABLE `People` (`Name` TEXT, `City` TEXT, `Score` TEXT)", None),
    (
        "INSERT INTO `People` VALUES (%s, %s, %s), (%s, %s, %s), (%s, %s, %s)",
        ["José", "Köln", "12", "Anna ", "Rome", "9", "Ann\u00a0Lee", "Oslo", None],
    ),
]


@pytest.fixture
def task():
    database = TaskDatabase(shared_server(), PEOPLE)
    tool = MariaDBTool(database=database, timeout_seconds=1)
    yield tool
    tool.close()


def test_comparisons_follow_mysql_8s_collation_and_coercion(task):
    count = "SELECT COUNT(*) FROM `People` WHERE "
    assert task.invoke(count + "`Name` = 'jose'") == "[(1,)]"  # case- and accent-insensitive
    assert task.invoke(count + "`City` = 'koln'") == "[(1,)]"
    assert task.invoke(count + "`Name` = 'Anna'") == "[(0,)]"  # NO PAD: the trailing space counts
    # A non-breaking space weighs as a space in the UCA collations (MySQL 8's among them).
    assert task.invoke(count + "`Name` = 'Ann Lee'") == "[(1,)]"
    assert task.invoke(count + "`Score` > 10") == "[(1,)]"  # text compared with a number: as numbers
    assert task.invoke(count + "`Score` > '10'") == "[(2,)]"  # with text: as text, so '9' > '10' too
    assert task.invoke("SELECT MAX(`Score`) FROM `People`") == "[('9',)]"
    assert task.invoke("SELECT SUM(`Score`) FROM `People`") == "[(21.0,)]"
    assert task.invoke("SELECT @@group_concat_max_len") == "[(1024,)]"  # AgentBench's hash cut
    assert task.invoke('SELECT `City` FROM `People` WHERE `Name` = "José"') == "[('Köln',)]"


def test_updates_store_what_mysql_stores(task):
    assert task.invoke("UPDATE `People` SET `Score` = `Score` + 1 WHERE `Name` = 'José'") == "[]"
    assert task.run_rows("SELECT `Score` FROM `People` WHERE `Name` = 'José'") == [("13",)]
    # Strict mode: a value that is not a number fails the statement, and nothing changes.
    task.invoke("UPDATE `People` SET `City` = 'x1' WHERE `Name` = 'José'")
    error = task.invoke("UPDATE `People` SET `Score` = `City` + 1")
    assert error.startswith("1292 (22007): Truncated incorrect DOUBLE value: 'x1'"), error
    assert task.run_rows("SELECT `Score` FROM `People` WHERE `Name` = 'José'") == [("13",)]


def test_a_tasks_user_reaches_its_own_database_and_nothing_else(task):
    other = TaskDatabase(shared_server(), [("CREATE TABLE `Secret` (`x` TEXT)", None)])
    try:
        assert task.invoke("SHOW DATABASES") == f"[('information_schema',), ('{task.database.name}',)]"
        assert task.invoke(f"SELECT * FROM `{other.name}`.`Secret`").startswith(
            "1142 (42000): SELECT command denied"
        )
        assert task.invoke("SELECT * FROM mysql.user").startswith("1142 (42000)")
        assert task.invoke("CREATE DATABASE `mine`").startswith("1044 (42000): Access denied")
        assert task.invoke("SET GLOBAL max_connections = 1").startswith("1227 (42000)")
        assert task.invoke("SELECT 1 INTO OUTFILE '/tmp/agentlm-out'").startswith("1227 (42000)")
        assert task.invoke("SELECT LOAD_FILE('/etc/passwd')") == "[(None,)]"  # no FILE privilege
        assert task.invoke(f"DROP DATABASE `{other.name}`").startswith("1044 (42000)")
        assert other.run("SELECT COUNT(*) FROM `Secret`") == [(0,)]
    finally:
        other.close()


def test_long_statements_are_stopped_and_huge_results_cut(task):
    for statement in ("SELECT SLEEP(30)", "SELECT BENCHMARK(100000000000, MD5('x'))",
                      "SET STATEMENT max_statement_time = 0 FOR SELECT BENCHMARK(100000000000, MD5('x'))"):  # fmt: skip
        began = time.monotonic()
        assert task.invoke(statement) == "the statement ran longer than 1 s and was stopped."
        assert time.monotonic() - began < 5
    began = time.monotonic()
    out = task.invoke("SELECT seq FROM seq_1_to_1000000000")  # a billion rows
    assert out.startswith("[(1,), (2,)") and out.endswith("[TRUNCATED]") and time.monotonic() - began < 5
    assert task.invoke("SELECT COUNT(*) FROM `People`") == "[(3,)]"  # the next statement works
    assert task.invoke("SELECT 1; DROP TABLE `People`").startswith("1064 (42000)")  # one statement a call
    assert task.invoke("SELECT COUNT(*) FROM `People`") == "[(3,)]"


def test_closing_drops_the_database_its_user_and_their_connections(task):
    server, name, user = task.database.server, task.database.name, task.database.user
    held = task.database.connect()
    task.close()
    assert (name,) not in server.admin("SHOW DATABASES")
    assert server.admin("SELECT COUNT(*) FROM mysql.user WHERE User = %s", (user,)) == [(0,)]
    assert server.admin("SELECT COUNT(*) FROM information_schema.processlist WHERE User = %s", (user,)) == [
        (0,)
    ]
    with pytest.raises(pymysql.MySQLError):
        held.ping()
    assert task.invoke("SELECT 1") == "this task's database is closed"


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_a_killed_owner_leaves_no_server_and_no_data_behind():
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "from agentlm.agent.tools.mariadb import MariaDBServer\n"
         "server = MariaDBServer()\nprint(server.dir, flush=True)\nimport time; time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    data = Path(owner.stdout.readline().strip())
    assert data.is_dir() and _processes_with(f"--datadir={data}")
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    eventually(lambda: not _processes_with(f"--datadir={data}"), 30, what="the server to stop")
    eventually(lambda: not data.exists(), 30, what="the data directory to go")


def test_a_stopped_server_says_so_and_leaves_nothing():
    server = MariaDBServer()
    assert server.alive() and server.socket.exists()
    server.stop()
    assert not server.alive() and not server.dir.exists()
    with pytest.raises(MariaDBUnavailable, match="stopped"):
        server.admin("SELECT 1")

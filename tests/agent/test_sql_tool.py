"""The SQL tool cannot change the database, reach files, or run forever."""

import time

import duckdb
import pytest

from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.tools.sql import SQLTool, render_rows


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_hr_database(tmp_path_factory.mktemp("sql") / "hr.duckdb")


@pytest.fixture()
def tool(db):
    t = SQLTool(database=db, timeout_seconds=2.0)
    yield t
    t.close()


def employee_count(db) -> int:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM employees").fetchone()[0]


def test_select_returns_rows_as_agentbench_showed_them(tool):
    assert tool.invoke("SELECT count(*) FROM employees") == "[(60,)]"
    out = tool.invoke("SELECT hire_date FROM employees WHERE first_name = 'Ben' AND last_name = 'Ortiz'")
    assert out == "[('2018-06-24',)]"


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM employees",
        "UPDATE employees SET first_name = 'X'",
        "INSERT INTO rooms VALUES (99, 'Z', 1, 1)",
        "DROP TABLE employees",
        "WITH d AS (DELETE FROM employees RETURNING *) SELECT count(*) FROM d",
        "CREATE TABLE t AS SELECT 1",
        "ATTACH '/tmp/other.duckdb' AS other",
        "COPY employees TO '/tmp/leak.csv'",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_json('/etc/os-release')",
        "SELECT * FROM read_parquet('/tmp/x.parquet')",
        "SELECT * FROM glob('/etc/*')",
        "EXPORT DATABASE '/tmp/agentlm-export'",
        "LOAD httpfs",
        "SET threads = 1",
        "PRAGMA threads = 1",
        "SELECT 1; DELETE FROM employees",
        "SELECT 1; WITH d AS (DELETE FROM employees RETURNING *) SELECT count(*) FROM d",
    ],
)
def test_statements_that_write_or_reach_outside_fail_and_change_nothing(tool, db, statement):
    before = employee_count(db)
    out = tool.invoke(statement)
    tool.close()  # DuckDB allows one configuration per file in a process: check with a fresh connection
    assert out.startswith("Error:"), out
    assert employee_count(db) == before


def test_exactly_one_statement(tool):
    assert tool.invoke("SELECT 1; SELECT 2") == "Error: send exactly one SQL statement per action (got 2)."
    assert tool.invoke("   ") == "Error: send exactly one SQL statement per action (got 0)."
    assert tool.invoke("/* only a comment */").startswith("Error: send exactly one")
    assert tool.invoke("SELECT 1;") == tool.invoke("SELECT 1 -- a comment") == "[(1,)]"


def test_file_readers_are_off_even_for_files_the_process_can_read(tool, tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    for query in (f"SELECT * FROM '{csv}'", f"SELECT * FROM read_csv_auto('{csv}')"):
        out = tool.invoke(query)
        assert out.startswith("Error: Permission Error") and "disabled by configuration" in out


def test_langchain_style_input_and_plain_values(tool):
    assert tool.invoke({"query": "SELECT 42"}) == "[(42,)]"
    assert tool.invoke("SELECT DATE '2026-01-02', TIMESTAMP '2026-01-02 09:30', 1.50::DECIMAL(4,2)") == (
        "[('2026-01-02', '2026-01-02 09:30:00', 1.5)]"
    )


def test_syntax_errors_come_back_as_observations(tool):
    out = tool.invoke("SELEC 1")
    assert out.startswith("Error:") and "syntax" in out.lower()


def test_a_query_cannot_take_more_than_its_memory_limit(tool: SQLTool):
    assert tool.invoke("SELECT current_setting('memory_limit')") == "[('244.1 MiB',)]"
    assert tool.invoke("SET memory_limit = '8GB'").startswith("Error:")  # the limit is locked


def test_long_queries_are_interrupted_and_the_tool_keeps_working(db):
    tool = SQLTool(database=db, timeout_seconds=0.3)
    try:
        started = time.perf_counter()
        out = tool.invoke("SELECT max(a.range * b.range) FROM range(100000000) a, range(1000) b")
        assert out == "Error: the query ran longer than 0.3 s and was stopped."
        assert time.perf_counter() - started < 5
        assert tool.invoke("SELECT count(*) FROM rooms") == "[(10,)]"
    finally:
        tool.close()


def test_results_are_capped_at_max_rows(db):
    tool = SQLTool(database=db, max_rows=3, max_chars=10_000)
    try:
        assert tool.invoke("SELECT range FROM range(100)") == "[(0,), (1,), (2,)]"
    finally:
        tool.close()


def test_output_is_capped_like_agentbench():
    text = render_rows([(i, "x" * 20) for i in range(100)], max_chars=800)
    assert len(text) == 800 + len("[TRUNCATED]") and text.endswith("[TRUNCATED]")


def test_missing_database_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="agentlm data hr-db"):
        SQLTool(database=tmp_path / "nope.duckdb").schema()


def test_schema_lists_every_table(tool):
    schema = tool.schema()
    for table in ("employees", "leave_balances", "leave_requests", "rooms", "meetings", "policies"):
        assert f"CREATE TABLE {table}" in schema

"""Write-through suite: no statement sent through SQLTool changes the real database file.

Every case runs in both modes ("deny" and "scratch") against a real DuckDB file and then checks
that the file's bytes, mtime and every table's content are what they were. Statements that reach
outside the database must come back as errors. The approval flow (scratch copy, changes, apply,
discard) is tested below the cases.
"""

import hashlib
import os
from pathlib import Path

import duckdb
import pytest

from agentlm.agent.tools.sql import CONNECTION_CONFIG, SQLTool, WriteApplyError

SECRET = "agentlm-secret-marker"

# (id, statements sent one call each, kind): "write" changes data (deny: refused; scratch: runs on
# the copy), "outside" reaches past the database or loosens settings (an error in both modes),
# "any" may or may not succeed but must change nothing.
CASES = [
    ("insert", ["INSERT INTO t VALUES (9, 'z')"], "write"),
    ("update", ["UPDATE t SET b = 'x'"], "write"),
    ("delete", ["DELETE FROM t"], "write"),
    ("truncate", ["TRUNCATE t"], "write"),
    ("merge", ["MERGE INTO t USING (SELECT 1 AS a) s ON t.a = s.a WHEN MATCHED THEN DELETE"], "write"),
    ("cte-delete", ["WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d"], "write"),
    ("cte-update", ["WITH u AS (UPDATE t SET b = 'y' RETURNING *) SELECT * FROM u"], "write"),
    ("cte-insert", ["WITH i AS (INSERT INTO t VALUES (7, 'q') RETURNING *) SELECT * FROM i"], "write"),
    ("nested-cte-delete", ["SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d)"], "any"),
    ("multi-select-drop", ["SELECT 1; DROP TABLE t"], "outside"),
    ("multi-select-cte-delete", ["SELECT 1; WITH d AS (DELETE FROM t RETURNING *) SELECT 1"], "outside"),
    ("comment-before-delete", ["/* harmless */ DELETE FROM t"], "write"),
    ("line-comment-then-delete", ["-- just a read\nDELETE FROM t"], "write"),
    ("comment-hiding-semicolon", ["SELECT 1 /* ; */; DELETE FROM t"], "outside"),
    ("string-hiding-semicolon", ["SELECT ';'; DELETE FROM u"], "outside"),
    ("attach-other-file", ["ATTACH '{tmp}/other.duckdb' AS o"], "outside"),
    ("attach-memory", ["ATTACH ':memory:' AS m", "CREATE TABLE m.x AS SELECT 1"], "outside"),
    ("attach-same-file-writable", ["ATTACH '{db}' AS again", "DELETE FROM again.t"], "outside"),
    ("attach-same-file-read-only", ["ATTACH '{db}' AS again (READ_ONLY)"], "outside"),
    ("detach", ["DETACH db"], "outside"),
    ("use-other-catalog", ["USE memory"], "outside"),
    ("use-temp", ["USE temp.main"], "outside"),
    ("copy-to-file", ["COPY t TO '{tmp}/leak.csv'"], "outside"),
    ("copy-from-file", ["COPY t FROM '{csv}'"], "outside"),
    ("copy-database", ["COPY FROM DATABASE db TO memory"], "outside"),
    ("export-database", ["EXPORT DATABASE '{tmp}/export'"], "outside"),
    ("import-database", ["IMPORT DATABASE '{tmp}/export'"], "outside"),
    ("install-httpfs", ["INSTALL httpfs"], "outside"),
    ("load-httpfs", ["LOAD httpfs"], "outside"),
    ("set-external-access", ["SET enable_external_access = true"], "outside"),
    ("set-global-external-access", ["SET GLOBAL enable_external_access = true"], "outside"),
    ("reset-external-access", ["RESET enable_external_access"], "outside"),
    ("unlock-configuration", ["SET lock_configuration = false"], "outside"),
    ("set-autoload", ["SET autoload_known_extensions = true"], "outside"),
    ("pragma-checkpoint-on-shutdown", ["PRAGMA enable_checkpoint_on_shutdown"], "outside"),
    ("pragma-threads", ["PRAGMA threads = 1"], "outside"),
    ("pragma-database-size", ["PRAGMA database_size"], "any"),
    ("checkpoint", ["CHECKPOINT"], "any"),
    ("force-checkpoint", ["FORCE CHECKPOINT"], "any"),
    ("vacuum-analyze", ["VACUUM", "ANALYZE"], "any"),
    ("create-table", ["CREATE TABLE n AS SELECT 1 AS x"], "write"),
    ("create-or-replace", ["CREATE OR REPLACE TABLE t AS SELECT 1 AS a"], "write"),
    ("drop-table", ["DROP TABLE t"], "write"),
    ("alter-add-column", ["ALTER TABLE t ADD COLUMN c INT"], "write"),
    ("alter-rename", ["ALTER TABLE t RENAME TO t2"], "write"),
    ("create-macro", ["CREATE MACRO m(x) AS x + 1"], "write"),
    ("create-view", ["CREATE VIEW v AS SELECT 1"], "write"),
    ("create-sequence", ["CREATE SEQUENCE s"], "write"),
    (
        "temp-table-then-copy-into-main",
        ["CREATE TEMP TABLE k AS SELECT * FROM t", "INSERT INTO t SELECT * FROM k"],
        "write",
    ),
    ("read-csv-passwd", ["SELECT * FROM read_csv('/etc/passwd')"], "outside"),
    ("read-csv-auto-readable-file", ["SELECT * FROM read_csv_auto('{csv}')"], "outside"),
    ("from-passwd", ["FROM '/etc/passwd'"], "outside"),
    ("select-from-readable-file", ["SELECT * FROM '{csv}'"], "outside"),
    ("read-text", ["SELECT * FROM read_text('{csv}')"], "outside"),
    ("read-blob", ["SELECT * FROM read_blob('/etc/hostname')"], "outside"),
    ("read-json", ["SELECT * FROM read_json('/etc/os-release')"], "outside"),
    ("read-parquet", ["SELECT * FROM read_parquet('{tmp}/x.parquet')"], "outside"),
    ("glob-root", ["SELECT * FROM glob('/*')"], "outside"),
    ("sniff-csv", ["SELECT * FROM sniff_csv('{csv}')"], "outside"),
    ("url", ["SELECT * FROM 'https://example.com/x.csv'"], "outside"),
    ("create-secret", ["CREATE PERSISTENT SECRET s (TYPE s3)"], "outside"),
    ("prepare-execute", ["PREPARE p AS DELETE FROM t", "EXECUTE p"], "outside"),
    ("query-function-delete", ["SELECT * FROM query('DELETE FROM t RETURNING *')"], "outside"),
    ("call-checkpoint", ["CALL checkpoint()"], "any"),
    ("transaction-commit", ["BEGIN", "DELETE FROM t", "COMMIT"], "any"),
    ("transaction-rollback", ["BEGIN TRANSACTION", "UPDATE t SET b = 'z'", "ROLLBACK"], "any"),
]
MODES = ["deny", "scratch"]
RESULTS: dict[str, int] = {"cases": 0, "writes_to_real": 0}


def build(path: Path) -> Path:
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        conn.execute("CREATE TABLE u AS SELECT range AS id FROM range(50)")
    return path


def content_hash(path: Path) -> str:
    """Every table's sorted rows, hashed; opened read-only in the tool's configuration."""
    digest = hashlib.sha256()
    with duckdb.connect(str(path), read_only=True, config=CONNECTION_CONFIG) as conn:
        for (name,) in conn.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            digest.update(name.encode())
            digest.update(repr(sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)).encode())
    return digest.hexdigest()


def file_state(path: Path) -> tuple:
    wal = Path(str(path) + ".wal")
    return (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, wal.exists())


@pytest.fixture()
def world(tmp_path):
    db = build(tmp_path / "db.duckdb")
    csv = tmp_path / "secret.csv"
    csv.write_text(f"a,b\n1,{SECRET}\n")
    return {"db": db, "tmp": tmp_path, "csv": csv}


def snapshot(world) -> tuple:
    return file_state(world["db"]), content_hash(world["db"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("statements", "kind"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_real_database_is_unchanged(world, mode, statements, kind):
    before = snapshot(world)
    tool = SQLTool(database=world["db"], writes=mode, timeout_seconds=5)
    outs = []
    try:
        for statement in statements:
            outs.append(tool.invoke(statement.format(**world)))
    finally:
        tool.close()
    after = snapshot(world)
    RESULTS["cases"] += 1
    RESULTS["writes_to_real"] += before != after
    assert after == before, (statements, outs)
    assert not any(SECRET in out for out in outs)
    if kind == "outside":
        assert any(out.startswith("Error:") for out in outs), outs
    if kind == "write" and mode == "deny":
        assert any("cannot change the database" in out for out in outs), outs
    if kind == "write" and mode == "scratch":
        assert not any("cannot change the database" in out for out in outs), outs
    assert not list(world["tmp"].glob("leak*")) and not (world["tmp"] / "export").exists()
    assert not (world["tmp"] / "other.duckdb").exists()


def test_file_readers_report_errors_and_read_nothing(world):
    for mode in MODES:
        tool = SQLTool(database=world["db"], writes=mode)
        try:
            tool.invoke("DELETE FROM u WHERE id > 40")  # scratch mode: readers now run on the copy
            for query in (
                f"SELECT * FROM read_csv('{world['csv']}')",
                f"SELECT * FROM read_text('{world['csv']}')",
                f"FROM '{world['csv']}'",
                "SELECT * FROM glob('/*')",
                "SELECT * FROM read_blob('/etc/passwd')",
            ):
                out = tool.invoke(query)
                assert out.startswith("Error: Permission Error") and "disabled by configuration" in out, out
                assert SECRET not in out
        finally:
            tool.close()


def test_suite_size_and_no_write_reached_the_real_file():
    # Runs after the parametrized cases (pytest keeps definition order within a module).
    if RESULTS["cases"] == 0:
        pytest.skip("run the whole module to count its cases")
    print(f"write-through cases: {RESULTS['cases']} ({len(CASES)} statements x {len(MODES)} modes)")
    assert len(CASES) >= 25
    assert RESULTS["cases"] == len(CASES) * len(MODES)
    assert RESULTS["writes_to_real"] == 0


# --- the approval flow --------------------------------------------------------------------------


@pytest.fixture()
def scratch(world):
    tool = SQLTool(database=world["db"], writes="scratch")
    yield tool
    tool.close()


def real_rows(db: Path, table: str = "t") -> list[tuple]:
    with duckdb.connect(str(db), read_only=True, config=CONNECTION_CONFIG) as conn:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall())


def test_writes_are_seen_by_the_tool_but_not_by_a_fresh_one(world, scratch):
    assert scratch.invoke("INSERT INTO t VALUES (4, 'four')") == "[(1,)]"
    assert scratch.invoke("SELECT count(*) FROM t") == "[(4,)]"
    fresh = SQLTool(database=world["db"])
    try:
        assert fresh.invoke("SELECT count(*) FROM t") == "[(3,)]"
    finally:
        fresh.close()
    assert scratch.pending_writes == ["INSERT INTO t VALUES (4, 'four')"]
    assert scratch.table_rows("t")[-1] == (4, "four")


def test_reads_are_not_pending_writes(scratch):
    scratch.invoke("UPDATE t SET b = 'uno' WHERE a = 1")
    scratch.invoke("SELECT * FROM t WHERE b = 'delete'")
    scratch.invoke("WITH x AS (SELECT 1) SELECT * FROM x")
    scratch.invoke("CHECKPOINT")
    assert scratch.pending_writes == ["UPDATE t SET b = 'uno' WHERE a = 1"]


def test_changes_list_added_and_removed_rows(scratch):
    assert scratch.changes() == {}
    scratch.invoke("UPDATE t SET b = 'uno' WHERE a = 1")
    scratch.invoke("DELETE FROM u WHERE id >= 48")
    scratch.invoke("CREATE TABLE n AS SELECT 7 AS x")
    changes = scratch.changes()
    assert set(changes) == {"t", "u", "n"}
    assert changes["t"].added == [(1, "uno")] and changes["t"].removed == [(1, "one")]
    assert sorted(changes["u"].removed) == [(48,), (49,)] and changes["u"].added == []
    assert changes["n"].added == [(7,)]


def test_apply_writes_makes_them_real(world, scratch):
    scratch.invoke("INSERT INTO t VALUES (4, 'four')")
    scratch.invoke("DROP TABLE u")
    report = scratch.apply_writes(approved_by="alice")
    assert report.approved_by == "alice" and len(report.statements) == 2
    assert report.changes["t"].added == [(4, "four")] and len(report.changes["u"].removed) == 50
    assert scratch.pending_writes == [] and scratch.changes() == {}
    assert real_rows(world["db"])[-1] == (4, "four")
    assert scratch.invoke("SELECT count(*) FROM t") == "[(4,)]"  # reads the real file again
    assert scratch.invoke("SELECT * FROM u").startswith("Error: Catalog Error")


def test_discard_writes_drops_them(world, scratch):
    before = snapshot(world)
    scratch.invoke("DELETE FROM t")
    assert scratch.invoke("SELECT count(*) FROM t") == "[(0,)]"
    scratch.discard_writes()
    assert scratch.pending_writes == [] and scratch.invoke("SELECT count(*) FROM t") == "[(3,)]"
    scratch.close()
    assert snapshot(world) == before


def test_hidden_cte_delete_applies_only_after_approval(world, scratch):
    assert (
        scratch.invoke("WITH d AS (DELETE FROM t WHERE a = 2 RETURNING *) SELECT count(*) FROM d") == "[(1,)]"
    )
    assert scratch.pending_writes == [
        "WITH d AS (DELETE FROM t WHERE a = 2 RETURNING *) SELECT count(*) FROM d"
    ]
    assert scratch.changes()["t"].removed == [(2, "two")]
    assert len(real_rows(world["db"])) == 3
    scratch.apply_writes(approved_by="bob")
    assert real_rows(world["db"]) == [(1, "one"), (3, "three")]


def test_later_hidden_cte_write_is_recorded_too(scratch):
    scratch.invoke("UPDATE t SET b = upper(b)")
    scratch.invoke("WITH d AS (DELETE FROM t WHERE a = 3 RETURNING *) SELECT count(*) FROM d")
    assert len(scratch.pending_writes) == 2 and len(scratch.table_rows("t")) == 2


def test_apply_refuses_when_the_real_database_changed_meanwhile(world, scratch):
    scratch.invoke("UPDATE t SET b = b || '!' WHERE a <= 2")
    # Someone else adds a row the replayed UPDATE would also touch.
    with duckdb.connect(str(world["db"])) as other:
        other.execute("INSERT INTO t VALUES (0, 'zero')")
    expected = real_rows(world["db"])
    with pytest.raises(WriteApplyError, match="did not reproduce the scratch copy"):
        scratch.apply_writes(approved_by="carol")
    assert real_rows(world["db"]) == expected  # rolled back
    assert scratch.pending_writes  # still there, to discard or retry


def test_apply_refuses_statements_that_are_not_deterministic(world, scratch):
    scratch.invoke("INSERT INTO t SELECT 5, random()::VARCHAR")
    before = real_rows(world["db"])
    with pytest.raises(WriteApplyError):
        scratch.apply_writes(approved_by="dave")
    assert real_rows(world["db"]) == before


def test_temporary_tables_work_in_both_modes_and_survive_the_copy(world):
    for mode in MODES:
        tool = SQLTool(database=world["db"], writes=mode)
        try:
            assert tool.invoke("CREATE TEMP TABLE k AS SELECT * FROM t WHERE a > 1") == "[(2,)]"
            assert tool.invoke("INSERT INTO k VALUES (10, 'ten')") == "[(1,)]"
            assert tool.pending_writes == []
            if mode == "scratch":
                assert tool.invoke("INSERT INTO t SELECT * FROM k") == "[(3,)]"
                assert tool.invoke("SELECT count(*) FROM k") == "[(3,)]"
                tool.apply_writes(approved_by="erin")
                assert len(real_rows(world["db"])) == 6
        finally:
            tool.close()


def test_configuration_cannot_be_loosened_on_any_connection(world, scratch):
    scratch.invoke("DELETE FROM t WHERE a = 1")
    for tool_query in ("SET enable_external_access = true", "SET lock_configuration = false"):
        assert scratch.invoke(tool_query).startswith("Error: settings cannot be changed")
    assert scratch.invoke("SELECT current_setting('enable_external_access')") == "[(False,)]"
    # The configuration itself refuses, should a SET ever get past the tool's statement check.
    with (
        duckdb.connect(":memory:", config=CONNECTION_CONFIG) as conn,
        pytest.raises(duckdb.Error, match="configuration has been locked"),
    ):
        conn.execute("SET enable_external_access = true")


def test_close_removes_the_scratch_copy(scratch):
    scratch.invoke("DELETE FROM t")
    directory = scratch._scratch_dir
    assert directory is not None and any(directory.iterdir())
    scratch.close()
    assert not directory.exists() and scratch.pending_writes == []


def test_deny_mode_explains_itself(world):
    tool = SQLTool(database=world["db"])
    try:
        out = tool.invoke("WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d")
        assert (
            out
            == "Error: this assistant cannot change the database (the statement is a SELECT; only reading is allowed)."
        )
        assert tool.invoke("SELEC 1").startswith("Error: Parser Error")  # other errors keep their text
        assert tool.invoke("INSERT INTO nope VALUES (1)").startswith("Error: Catalog Error")
    finally:
        tool.close()


def test_table_render(world):
    tool = SQLTool(database=world["db"], render="table", max_rows=2, cell_chars=6)
    try:
        assert tool.invoke("SELECT a, b || ' long' AS b FROM t ORDER BY a") == (
            "a | b\n1 | one l…\n2 | two l…\n(first 2 of 3 rows)"
        )
        assert tool.invoke("SELECT 1 AS x") == "x\n1\n(1 row)"
        assert tool.invoke("SELECT * FROM t WHERE a > 9") == "a | b\n(0 rows)"
    finally:
        tool.close()


def test_no_stray_files_next_to_the_database(world):
    tool = SQLTool(database=world["db"], writes="scratch")
    tool.invoke("DELETE FROM t")
    tool.close()
    assert sorted(os.listdir(world["tmp"])) == ["db.duckdb", "secret.csv"]

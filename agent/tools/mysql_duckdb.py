"""AgentBench's MySQL tasks on DuckDB: a translation for machines without MariaDB.

The database environment runs dbbench on MariaDB when it is installed (``agent/tools/mariadb.py``).
Without it, the tasks run here: each table in a DuckDB file with MySQL's behaviour the tasks rely
on made explicit.

- Columns are ``VARCHAR COLLATE NOACCENT.NOCASE``: TEXT like AgentBench (values come back as str,
  as MySQL's driver returned them), compared case- and accent-insensitively like MySQL 8's default
  utf8mb4_0900_ai_ci (``LIKE '%jimmy%'`` finds "Jimmy"). MIN/MAX/ORDER BY on such a column compare
  text, as MySQL does on TEXT.
- Statements are written for MySQL (backticks, MySQL functions): sqlglot translates them to DuckDB
  (``read="mysql"``), for the gold SQL and for the agent's statements alike (``MySQLTool``).
- MySQL compares a string with a number as numbers and sums strings as numbers; DuckDB refuses
  both. The translation wraps the non-literal side of a comparison with a numeric literal, and the
  argument of SUM/AVG, in ``TRY_CAST(... AS DOUBLE)``. Strings that are not numbers become NULL,
  where MySQL would take their numeric prefix (``'1,429'`` → 1) or 0: a documented difference.

``benchmarks/db_oracle.py`` measures how often the verdicts here agree with MariaDB's.
"""

from __future__ import annotations

import hashlib
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from agentlm.agent.tools.sql import SQLError, SQLTool

__all__ = ["TEXT", "MySQLTool", "agentbench_table_hash", "build_table", "mysql_to_duckdb", "quote"]

TEXT = "VARCHAR COLLATE NOACCENT.NOCASE"


# --- MySQL → DuckDB ------------------------------------------------------------------------------


def _is_number(node: exp.Expression) -> bool:
    if isinstance(node, exp.Neg):
        node = node.this
    return isinstance(node, exp.Literal) and not node.is_string


def _as_double(node: exp.Expression) -> exp.Expression:
    return exp.TryCast(this=node.copy(), to=exp.DataType.build("DOUBLE"))


def _mysql_numbers(tree: exp.Expression) -> exp.Expression:
    """MySQL's string-to-number coercion, made explicit for DuckDB."""
    # `SET Gold = 2` in an UPDATE is an assignment, which sqlglot also holds as an EQ: its target
    # stays a column (a cast there is a syntax error).
    assignments = {id(a) for update in tree.find_all(exp.Update) for a in update.expressions}
    for node in list(tree.find_all(exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)):
        if id(node) in assignments:
            continue
        left, right = node.left, node.right
        if _is_number(right) and not _is_number(left):
            left.replace(_as_double(left))
        elif _is_number(left) and not _is_number(right):
            right.replace(_as_double(right))
    for node in list(tree.find_all(exp.Between)):
        if _is_number(node.args["low"]) and _is_number(node.args["high"]) and not _is_number(node.this):
            node.this.replace(_as_double(node.this))
    for node in list(tree.find_all(exp.In)):
        values = node.expressions
        if values and all(_is_number(v) for v in values) and not _is_number(node.this):
            node.this.replace(_as_double(node.this))
    # `Total + 0`, MySQL's idiom for sorting text numerically: column operands become numbers.
    for node in list(tree.find_all(exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
        for side in (node.left, node.right):
            if isinstance(side, exp.Column):
                side.replace(_as_double(side))
    for node in list(tree.find_all(exp.Sum, exp.Avg)):
        if not isinstance(node.this, exp.TryCast | exp.Cast):
            node.this.replace(_as_double(node.this))
    return tree


def _translate(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Command):  # sqlglot's fallback for syntax it does not model
        raise SQLError(f"this MySQL statement is not supported here: {tree.sql(dialect='mysql')[:80]!r}")
    if isinstance(tree, exp.Show):
        kind, target = str(tree.name).upper(), tree.args.get("target")
        if kind in ("COLUMNS", "FIELDS") and target is not None:
            return f"DESCRIBE {quote(target.name)}"
        if target is not None:
            raise SQLError(f"SHOW {kind} is not supported here; use SHOW TABLES or DESCRIBE `table`")
    return _mysql_numbers(tree).sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE)


def mysql_to_duckdb(sql: str) -> str:
    """Translate MySQL statements (``;``-separated) to DuckDB; raises SQLError when sqlglot cannot."""
    try:
        trees = [t for t in sqlglot.parse(sql, read="mysql") if t is not None]
        return ";\n".join(_translate(t) for t in trees)
    except SqlglotError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SQLError(f"could not read the statement as MySQL: {first}") from e


class MySQLTool(SQLTool):
    """SQLTool that takes MySQL, as AgentLM checkpoints were trained to write, and runs it on DuckDB."""

    description: str = "Run exactly one MySQL statement against the database and return the result rows."

    def prepare(self, query: str) -> str:
        return mysql_to_duckdb(query)


# --- building the table --------------------------------------------------------------------------


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: Any) -> str | None:
    # What MySQL stored when AgentBench inserted the value into a TEXT column.
    return None if value is None else str(value)


def build_table(conn: duckdb.DuckDBPyConnection, table: dict[str, Any]) -> None:
    columns = [c["name"] for c in table["table_info"]["columns"]]
    name = quote(table["table_name"])
    conn.execute(f"CREATE TABLE {name} ({', '.join(f'{quote(c)} {TEXT}' for c in columns)})")
    rows = [[_text(v) for v in row] for row in table["table_info"]["rows"]]
    if rows:
        conn.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(columns))})", rows)


def agentbench_table_hash(rows: list[tuple]) -> str:
    """AgentBench's md5 of a table (MySQL: md5(group_concat(substring(md5(concat_ws(',', cols)),1,5)
    order by rowhash))), including group_concat's default 1024-character cut."""
    hashes = sorted(
        hashlib.md5(",".join(str(v) for v in row if v is not None).encode()).hexdigest()[:5] for row in rows
    )
    joined = ",".join(hashes)[:1024]
    return hashlib.md5(joined.encode()).hexdigest()

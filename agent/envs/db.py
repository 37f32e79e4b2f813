"""AgentBench dbbench as an environment: one table per task, in a fresh DuckDB file per episode.

AgentBench v0.2 created each task's table in MySQL 8 with every column TEXT and inserted the rows
as given; the agent sees MySQL's rows as their Python repr. We do the same in DuckDB and keep the
MySQL behaviour the tasks and the trained checkpoints rely on:

- Columns are ``VARCHAR COLLATE NOACCENT.NOCASE``: TEXT like AgentBench (values come back as str,
  as pymysql returned them), compared case- and accent-insensitively like MySQL 8's default
  utf8mb4_0900_ai_ci (``LIKE '%jimmy%'`` finds "Jimmy"). MIN/MAX/ORDER BY on such a column compare
  text, as MySQL does on TEXT.
- Statements are written for MySQL (backticks, MySQL functions): sqlglot translates them to DuckDB
  (``read="mysql"``), for the gold SQL and for the agent's statements alike (``MySQLTool``).
- MySQL compares a string with a number as numbers and sums strings as numbers; DuckDB refuses
  both. The translation wraps the non-literal side of a comparison with a numeric literal, and the
  argument of SUM/AVG, in ``TRY_CAST(... AS DOUBLE)``. Strings that are not numbers become NULL,
  where MySQL would take their numeric prefix (``'1,429'`` → 1) or 0: a documented difference.

Scoring follows AgentBench's grader, except that the answer is parsed as data (json, then
``ast.literal_eval`` on bounded input), never evaluated, and numbers match within a tolerance.
Modifications score by table content (multiset of rows) against the gold statement run on a
fresh copy; ``agentbench_table_hash`` reproduces AgentBench's MySQL md5 for checking the port.

Some dev tasks cannot run: their table has an empty column name (MySQL refuses it too), or their
gold SQL is not valid MySQL or names tables/columns the table does not have (the dev set's
``sql.query`` was written loosely). Those are marked ``unsupported`` with the reason at load time;
an agent's answer to a query task can still be scored against its label.
"""

from __future__ import annotations

import ast
import collections
import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from agentlm.agent.envs.base import Environment, EnvTask, Episode, Setup, TaskFileError
from agentlm.agent.protocols import db_opening
from agentlm.agent.tools.sql import SQLError, SQLTool

__all__ = [
    "DBEnvironment",
    "DBEpisode",
    "MODIFICATIONS",
    "MySQLTool",
    "agentbench_table_hash",
    "answers_match",
    "mysql_to_duckdb",
    "parse_answer",
]

MODIFICATIONS = ("INSERT", "UPDATE", "DELETE")
MAX_ROUNDS = 15  # AgentBench dbbench's round limit
TEXT = "VARCHAR COLLATE NOACCENT.NOCASE"
MAX_ANSWER_CHARS = 20_000  # longer answers are compared as one string, never parsed
REL_TOL = ABS_TOL = 1e-6  # AgentBench compares floats exactly; rounding noise should not fail a run


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
            return f"DESCRIBE {_quote(target.name)}"
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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: Any) -> str | None:
    # What MySQL stored when AgentBench inserted the value into a TEXT column.
    return None if value is None else str(value)


def build_table(conn: duckdb.DuckDBPyConnection, table: dict[str, Any]) -> None:
    columns = [c["name"] for c in table["table_info"]["columns"]]
    name = _quote(table["table_name"])
    conn.execute(f"CREATE TABLE {name} ({', '.join(f'{_quote(c)} {TEXT}' for c in columns)})")
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


# --- answers -------------------------------------------------------------------------------------


def parse_answer(answer: str | None) -> list[Any]:
    """The agent's final answer as a list of values: a JSON or Python-literal list, else one string.

    Parsed as data only (AgentBench's grader calls eval on it).
    """
    if answer is None:
        return []
    text = answer.strip()
    if len(text) <= MAX_ANSWER_CHARS:
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            return list(value) if isinstance(value, list | tuple) else [value]
    return [text]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _key(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def answers_match(answer: list[Any], label: list[Any]) -> bool:
    """AgentBench's comparison: one value each → as numbers if both are, else as text; else as sets."""
    if len(answer) == 1 and len(label) == 1:
        a, b = _number(answer[0]), _number(label[0])
        if a is not None and b is not None:
            return _same_number(a, b)
        return _key(answer[0]) == _key(label[0])
    numbers_a = sorted({n for v in answer if (n := _number(v)) is not None})
    numbers_b = sorted({n for v in label if (n := _number(v)) is not None})
    texts_a = {_key(v) for v in answer if _number(v) is None}
    texts_b = {_key(v) for v in label if _number(v) is None}
    return (
        texts_a == texts_b
        and len(numbers_a) == len(numbers_b)
        and all(_same_number(x, y) for x, y in zip(numbers_a, numbers_b, strict=True))
    )


# --- tasks ---------------------------------------------------------------------------------------


def _gold(record: dict[str, Any]) -> str:
    return record["label"][0] if record["type"][0] in MODIFICATIONS else record["sql"]["query"]


def _why_unsupported(record: dict[str, Any]) -> str | None:
    table = record["table"]
    columns = [c["name"] for c in table["table_info"]["columns"]]
    for i, name in enumerate(columns):
        if not name.strip():
            return f"column {i} has an empty name, which MySQL (and DuckDB) refuse"
    lowered = [c.lower() for c in columns]
    if len(set(lowered)) != len(lowered):
        return "two columns share a name (MySQL compares column names case-insensitively)"
    gold = _gold(record)
    try:
        trees = [t for t in sqlglot.parse(gold, read="mysql") if t is not None]
    except SqlglotError as e:
        return f"the gold SQL is not valid MySQL ({str(e).strip().splitlines()[0]}): {gold!r}"
    if len(trees) != 1:
        return f"the gold SQL is {len(trees)} statements: {gold!r}"
    tree = trees[0]
    for t in tree.find_all(exp.Table):
        if t.name.lower() != table["table_name"].lower():
            return (
                f"the gold SQL names table {t.name!r}, the task's table is {table['table_name']!r}: {gold!r}"
            )
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}
    for c in tree.find_all(exp.Column):
        if c.name.lower() not in lowered and c.name.lower() not in aliases:
            return f"the gold SQL names column {c.name!r}, which the table does not have: {gold!r}"
    return None


def _need(condition: bool, path: Path, index: int, field: str, what: str) -> None:
    if not condition:
        raise TaskFileError(f"{path}: task {index}: field {field!r} {what}")


def _check_record(record: Any, path: Path, index: int) -> None:
    _need(isinstance(record, dict), path, index, "<record>", "must be a JSON object")
    for key in ("description", "add_description"):
        _need(isinstance(record.get(key), str), path, index, key, "must be a string")
    kinds = record.get("type")
    _need(
        isinstance(kinds, list) and kinds and isinstance(kinds[0], str),
        path,
        index,
        "type",
        "must be a list of strings",
    )
    table = record.get("table")
    _need(isinstance(table, dict), path, index, "table", "must be an object")
    _need(
        isinstance(table.get("table_name"), str) and table["table_name"],
        path,
        index,
        "table.table_name",
        "must be a non-empty string",
    )
    info = table.get("table_info")
    _need(isinstance(info, dict), path, index, "table.table_info", "must be an object")
    columns = info.get("columns")
    _need(
        isinstance(columns, list) and columns and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns),
        path, index, "table.table_info.columns", "must be a non-empty list of {name, type}",
    )  # fmt: skip
    rows = info.get("rows")
    _need(isinstance(rows, list), path, index, "table.table_info.rows", "must be a list")
    for r, row in enumerate(rows):
        _need(
            isinstance(row, list) and len(row) == len(columns)
            and all(v is None or isinstance(v, str | int | float) for v in row),
            path, index, f"table.table_info.rows[{r}]", f"must be a list of {len(columns)} scalar values",
        )  # fmt: skip
    label = record.get("label")
    _need(isinstance(label, list), path, index, "label", "must be a list")
    if kinds[0] in MODIFICATIONS:
        _need(
            len(label) == 1 and isinstance(label[0], str),
            path,
            index,
            "label",
            "must hold the gold statement",
        )
    else:
        sql = record.get("sql")
        _need(
            isinstance(sql, dict) and isinstance(sql.get("query"), str),
            path,
            index,
            "sql.query",
            "must be a string",
        )


class DBEnvironment(Environment):
    name = "db"

    def load(self, path: str | Path) -> list[EnvTask]:
        path = Path(path)
        tasks = []
        with path.open(encoding="utf-8") as f:
            for index, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskFileError(f"{path}: task {index}: not valid JSON ({e})") from e
                _check_record(record, path, index)
                tasks.append(
                    EnvTask(
                        id=f"{path.stem}-{index:05d}",
                        description=record["description"] + "\n" + record["add_description"],
                        raw=record,
                        unsupported=_why_unsupported(record),
                    )
                )
        return tasks

    def episode(self, task: EnvTask) -> DBEpisode:
        return DBEpisode(task)


class DBEpisode(Episode):
    """A fresh DuckDB file with the task's table; the agent's writes go to the tool's scratch copy."""

    def __init__(self, task: EnvTask):
        super().__init__(task)
        self.record = task.raw
        self.kind = self.record["type"][0]
        self.table = self.record["table"]["table_name"]
        self._dir = Path(tempfile.mkdtemp(prefix="agentlm-db-"))
        try:
            self.database = self._dir / "task.duckdb"
            with duckdb.connect(str(self.database)) as conn:
                build_table(conn, self.record["table"])
        except Exception:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.tool = MySQLTool(database=self.database, writes="scratch", render="repr")

    def setup(self) -> Setup:
        return Setup(
            protocol="db",
            prompt=db_opening(),
            task=self.task.description,
            tools={"sql": self.tool},
            max_rounds=MAX_ROUNDS,
            name=self.task.id,
        )

    def _expected_rows(self) -> list[tuple]:
        """The table after the gold statement, run on a fresh copy of the task's table."""
        with duckdb.connect(":memory:") as conn:
            build_table(conn, self.record["table"])
            conn.execute(mysql_to_duckdb(_gold(self.record)))
            return conn.execute(f"SELECT * FROM {_quote(self.table)}").fetchall()

    def reward(self, answer: str | None) -> float:
        if self.kind in MODIFICATIONS:
            try:
                now = self.tool.table_rows(self.table)
            except SQLError:
                return 0.0  # the agent dropped or renamed the table
            return float(collections.Counter(now) == collections.Counter(self._expected_rows()))
        return float(answers_match(parse_answer(answer), self.record["label"]))

    def reference_action(self) -> str | None:
        return _gold(self.record)

    def reference_answer(self) -> str | None:
        gold = _gold(self.record)
        if self.kind in MODIFICATIONS:
            self.tool.run_rows(gold)
            return "done"
        values = [v for row in self.tool.run_rows(gold) for v in row]
        # The dev set labels an empty result "none"; a gold policy answers in the labels' terms.
        return json.dumps(values if values else ["none"], default=str)

    def close(self) -> None:
        self.tool.close()
        shutil.rmtree(self._dir, ignore_errors=True)

"""AgentBench dbbench as an environment: each task's table in a database of its own, on MariaDB.

AgentBench v0.2 ran dbbench on MySQL 8: a database per task holding one table, every column TEXT,
the rows inserted as given; the agent's statements ran there and it saw the rows as their Python
repr. Here the same runs on a MariaDB server the environment starts (``agent/tools/mariadb.py``:
MySQL 8's collation, sql_mode and group_concat limit), so gold SQL that passes AgentBench's MySQL
passes here and the agent meets MySQL's own errors. Where MariaDB is not installed, the tasks run
on DuckDB through a MySQL translation (``agent/tools/mysql_duckdb.py``), with a warning: its
verdicts differ from MySQL's on a few tasks (``benchmarks/db_oracle.py`` counts them).
``AGENTLM_DB_ENGINE`` (``mariadb``, ``duckdb``) picks one explicitly.

Scoring follows AgentBench's grader:

- Queries: the final answer is compared with the label, as numbers when both are one number,
  else as sets. The answer is parsed as data (json, then ``ast.literal_eval`` on bounded input),
  never evaluated as AgentBench's ``eval`` did, and numbers match within a tolerance.
- Modifications: AgentBench's md5 of the table after the run (a 5-character hash per row, sorted,
  joined and cut at 1024 characters) against the task's ``answer_md5``, or, for tasks without one,
  the hash after the gold statement on a fresh copy of the table.

Tasks whose table MySQL would refuse (an empty, duplicate or over-long name, one ending with a
space) are marked ``unsupported`` at load time. Gold SQL that fails or disagrees with its label is the dataset's
own error: ``agentlm tasks verify`` lists those tasks and docs/results.md the dev set's.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import duckdb
import pymysql
import sqlglot
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError
from sqlglot import exp
from sqlglot.errors import SqlglotError

from agentlm.agent.envs.base import Environment, EnvTask, Episode, Setup, TaskFileError
from agentlm.agent.protocols import db_opening
from agentlm.agent.tools.mariadb import MariaDBTool, TaskDatabase, ident, mariadb_binaries, shared_server
from agentlm.agent.tools.mysql_duckdb import MySQLTool, agentbench_table_hash, build_table
from agentlm.agent.tools.sql import SQLError

log = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "DBEnvironment",
    "DBEpisode",
    "MODIFICATIONS",
    "answers_match",
    "db_engine",
    "parse_answer",
]

MODIFICATIONS = ("INSERT", "UPDATE", "DELETE")
MAX_ROUNDS = 15  # AgentBench dbbench's round limit
MAX_ANSWER_CHARS = 20_000  # longer answers are compared as one string, never parsed
REL_TOL = ABS_TOL = 1e-6  # AgentBench compares floats exactly; rounding noise should not fail a run
ENGINES = ("mariadb", "duckdb")
Engine = Literal["mariadb", "duckdb"]
_warned_duckdb = False


def db_engine(requested: str | None = None) -> Engine:
    """The engine dbbench tasks run on: `requested`, else $AGENTLM_DB_ENGINE, else MariaDB when it is
    installed, else DuckDB (with a warning, once)."""
    global _warned_duckdb
    choice = (requested or os.environ.get("AGENTLM_DB_ENGINE") or "").strip().lower()
    if choice:
        if choice not in ENGINES:
            raise ValueError(f"unknown database engine {choice!r} (AGENTLM_DB_ENGINE): use mariadb or duckdb")
        return choice  # type: ignore[return-value]
    if mariadb_binaries() is not None:
        return "mariadb"
    if not _warned_duckdb:
        _warned_duckdb = True
        log.warning(
            "MariaDB is not installed, so database tasks run on DuckDB through a MySQL translation, whose "
            "verdicts differ from AgentBench's MySQL on some tasks; `apt-get install mariadb-server` for "
            "AgentBench's semantics (set AGENTLM_DB_ENGINE=duckdb to silence this)"
        )
    return "duckdb"


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


def _why_table_unsupported(record: dict[str, Any]) -> str | None:
    """Why MySQL would refuse to create the task's table (no engine can run such a task)."""
    table = record["table"]["table_name"]
    if table != table.rstrip() or len(table) > 64:
        return f"the table name {table!r} ends with a space or is over 64 characters, which MySQL refuses"
    columns = [c["name"] for c in record["table"]["table_info"]["columns"]]
    for i, name in enumerate(columns):
        if not name.strip():
            return f"column {i} has an empty name, which MySQL refuses"
        if name != name.rstrip() or len(name) > 64:
            return f"column {i} ({name!r}) ends with a space or is over 64 characters, which MySQL refuses"
    lowered = [c.lower() for c in columns]
    if len(set(lowered)) != len(lowered):
        return "two columns share a name (MySQL compares column names case-insensitively)"
    return None


def _why_gold_untranslatable(record: dict[str, Any]) -> str | None:
    """Why the DuckDB port cannot run the gold SQL (MariaDB runs it and reports its own error)."""
    table = record["table"]
    lowered = [c["name"].lower() for c in table["table_info"]["columns"]]
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


Scalar = StrictStr | StrictInt | StrictFloat | None


class _Column(BaseModel):
    name: StrictStr


class _TableInfo(BaseModel):
    columns: list[_Column] = Field(min_length=1)
    rows: list[list[Scalar]]


class _Table(BaseModel):
    table_name: StrictStr = Field(min_length=1)
    table_info: _TableInfo


class _GoldQuery(BaseModel):
    query: StrictStr


class DBTaskRecord(BaseModel):
    """One dbbench task as AgentBench's files have it (other fields, e.g. ``answer_md5``, pass through)."""

    model_config = ConfigDict(extra="allow")

    description: StrictStr
    add_description: StrictStr
    type: list[StrictStr] = Field(min_length=1)  # the first is the kind: SELECT, INSERT, ...
    table: _Table
    label: list[Any]
    sql: _GoldQuery | None = None  # a query's gold SQL; a modification's is its label


def _check_record(record: Any, path: Path, index: int) -> DBTaskRecord:
    """The record as a ``DBTaskRecord``, or a ``TaskFileError`` naming the file, task and field."""

    def bad(field: str, what: str) -> TaskFileError:
        return TaskFileError(f"{path}: task {index}: field {field!r} {what}")

    try:
        task = DBTaskRecord.model_validate(record)
    except ValidationError as e:
        error = e.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
        raise bad(where or "<record>", error["msg"].lower()) from None
    info = task.table.table_info
    for r, row in enumerate(info.rows):
        if len(row) != len(info.columns):
            raise bad(f"table.table_info.rows[{r}]", f"must be a list of {len(info.columns)} scalar values")
    if task.type[0] in MODIFICATIONS:
        if len(task.label) != 1 or not isinstance(task.label[0], str):
            raise bad("label", "must hold the gold statement")
    elif task.sql is None:
        raise bad("sql.query", "must be a string")
    return task


class DBEnvironment(Environment):
    name = "db"

    def __init__(self, engine: str | None = None):
        self.engine = db_engine(engine)

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
                unsupported = _why_table_unsupported(record)
                if unsupported is None and self.engine == "duckdb":
                    unsupported = _why_gold_untranslatable(record)
                tasks.append(
                    EnvTask(
                        id=f"{path.stem}-{index:05d}",
                        description=record["description"] + "\n" + record["add_description"],
                        raw=record,
                        unsupported=unsupported,
                    )
                )
        return tasks

    def episode(self, task: EnvTask) -> DBEpisode:
        return DBEpisode(task, self.engine)


def _create_statements(table: dict[str, Any]) -> list[tuple[str, list[Any] | None]]:
    """AgentBench's CREATE TABLE (every column TEXT) and INSERT, for MySQL."""
    columns = [c["name"] for c in table["table_info"]["columns"]]
    name = ident(table["table_name"])
    statements: list[tuple[str, list[Any] | None]] = [
        (f"CREATE TABLE {name} ({', '.join(f'{ident(c)} TEXT' for c in columns)})", None)
    ]
    rows = table["table_info"]["rows"]
    if rows:
        values = ", ".join("(" + ", ".join(["%s"] * len(columns)) + ")" for _ in rows)
        names = ", ".join(ident(c) for c in columns)
        statements.append(
            (
                f"INSERT INTO {name} ({names}) VALUES {values}",
                [None if v is None else str(v) for r in rows for v in r],
            )
        )
    return statements


def _hash_query(record: dict[str, Any]) -> str:
    """AgentBench's md5 of the task's table, as it ran it on MySQL."""
    columns = ",".join(ident(c["name"]) for c in record["table"]["table_info"]["columns"])
    return (
        "SELECT md5(group_concat(rowhash ORDER BY rowhash)) AS hash FROM (SELECT "
        f"substring(MD5(CONCAT_WS(',', {columns})), 1, 5) AS rowhash FROM {ident(record['table']['table_name'])}) AS sub"
    )


class DBEpisode(Episode):
    """A fresh database with the task's table: on MariaDB a database and user of its own; on DuckDB a
    file whose changes go to the tool's scratch copy."""

    def __init__(self, task: EnvTask, engine: Engine = "mariadb"):
        super().__init__(task)
        self.record = task.raw
        self.kind = self.record["type"][0]
        self.table = self.record["table"]["table_name"]
        self.engine = engine
        self.database: Path | None = None  # the DuckDB file (DuckDB engine)
        self._dir: Path | None = None
        self._expected: str | None = None  # the gold statement's table hash, once computed
        self.tool: MariaDBTool | MySQLTool
        if engine == "mariadb":
            self.tool = MariaDBTool(
                database=TaskDatabase(shared_server(), _create_statements(self.record["table"]))
            )
            return
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

    def table_hash(self) -> str:
        """AgentBench's answer for a modification: its md5 query's result, as it printed it
        (``[('<md5>',)]``); a query error's text when the table is gone or changed shape."""
        if isinstance(self.tool, MariaDBTool):
            try:
                return str(self.tool.database.run(_hash_query(self.record)))
            except pymysql.MySQLError as e:
                return str(e)
        try:
            rows = self.tool.table_rows(self.table)
        except SQLError as e:
            return str(e)
        return f"[('{agentbench_table_hash(rows)}',)]" if rows else "[(None,)]"

    def expected_hash(self) -> str:
        """The task's ``answer_md5``, or the hash after its gold statement on a fresh copy."""
        if isinstance(self.record.get("answer_md5"), str):
            return self.record["answer_md5"]
        if self._expected is None:
            with DBEpisode(self.task, self.engine) as fresh:
                fresh.tool.run_rows(_gold(self.record))
                self._expected = fresh.table_hash()
        return self._expected

    def reward(self, answer: str | None) -> float:
        if self.kind in MODIFICATIONS:
            return float(self.table_hash() == self.expected_hash())
        return float(answers_match(parse_answer(answer), self.record["label"]))

    def explain(self, answer: str | None) -> str | None:
        if self.kind in MODIFICATIONS:
            return f"the table's hash is {self.table_hash()}, the task expects {self.expected_hash()}"
        return f"the answer {answer} is not the label {json.dumps(self.record['label'], ensure_ascii=False)}"

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
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

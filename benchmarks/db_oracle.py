"""dbbench verdicts against a MariaDB oracle that runs AgentBench's grader, in one run.

The oracle is AgentBench's dbbench code path written out plainly, on a MariaDB server of its own:
the database and table built as its ``build_init_sql`` does (a database named after the table,
every column TEXT, the rows as parameters), each statement run as root, a modification hashed with
its md5 query and compared with ``answer_md5``, a query's answer compared by ``calculate_overall``'s
rule (one value: as floats if both parse, else as text; several: as sets). It shares no code with
the environment (agent/envs/db.py) beyond starting the server.

Two cases per task, each judged by the oracle and by the environment on each engine:

- the gold policy: the gold SQL run in a fresh database; for a query, its result values are the
  answer (``["none"]`` when empty, as the dev set labels it);
- a wrong answer: for a query, the label with one value changed; for a modification, nothing done.

Tasks: the shared dev set (its own labels) and ``--generated`` tasks from ``agentlm.data.dbgen``
(training and held-out domains) labelled by the oracle, so the gold passes at the oracle and the
question is whether it passes here too. Goal: the default engine (MariaDB) agrees on >= 99 %.

Also printed: the dev tasks whose gold fails at the oracle (the dataset's own errors), and the
time to open a task's database on each engine.

    .venv/bin/python benchmarks/db_oracle.py [--generated 240] [--json F]
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlm.agent.envs.db import DBEnvironment
from agentlm.agent.tools.mariadb import MariaDBServer
from agentlm.data import dbgen

DEV = Path(__file__).resolve().parents[2] / "shared" / "agentbench" / "dbbench_dev.jsonl"
MODIFICATIONS = ("INSERT", "UPDATE", "DELETE")


# --- the oracle: AgentBench's dbbench on MariaDB ---------------------------------------------------


class Oracle:
    def __init__(self) -> None:
        self.server = MariaDBServer()
        self.conn = self.server.connect("root", "")

    def execute(self, sql: str, database: str | None = None, data: tuple = ()) -> tuple[bool, Any]:
        """(ok, rows or the error's text), as Container.execute ran one statement."""
        try:
            with self.conn.cursor() as cursor:
                if database:
                    cursor.execute(f"USE `{database}`")
                cursor.execute(sql, data or None)
                return True, list(cursor.fetchall())
        except Exception as e:
            return False, str(e)

    def build(self, record: dict[str, Any]) -> str:
        name = record["table"]["table_name"]
        info = record["table"]["table_info"]
        columns = ",".join(f"`{c['name']}` TEXT" for c in info["columns"])
        names = ",".join(f"`{c['name']}`" for c in info["columns"])
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")
        self.execute(f"CREATE DATABASE `{name}`")
        ok, error = self.execute(f"CREATE TABLE `{name}` ({columns})", name)
        if not ok:
            raise RuntimeError(error)
        rows = info["rows"]
        if rows:
            items = ",".join("(" + ",".join(["%s"] * len(row)) + ")" for row in rows)
            data = tuple(v for row in rows for v in row)
            ok, error = self.execute(f"INSERT INTO `{name}` ({names}) VALUES {items}", name, data)
            if not ok:
                raise RuntimeError(error)
        return name

    def table_hash(self, record: dict[str, Any], database: str) -> str:
        columns = ",".join(f"`{c['name']}`" for c in record["table"]["table_info"]["columns"])
        ok, result = self.execute(
            "select md5(group_concat(rowhash order by rowhash)) as hash from( SELECT "
            f"substring(MD5(CONCAT_WS(',', {columns})), 1, 5) AS rowhash FROM `{database}`) as sub;",
            database,
        )
        return str(result)

    def gold(self, record: dict[str, Any]) -> tuple[str | None, str | None]:
        """What the gold policy submits: (answer text or table hash, error)."""
        try:
            database = self.build(record)
        except RuntimeError as e:
            return None, f"the table cannot be created: {e}"
        kind = record["type"][0]
        sql = record["label"][0] if kind in MODIFICATIONS else record["sql"]["query"]
        ok, result = self.execute(sql, database)
        if not ok:
            return None, result
        if kind in MODIFICATIONS:
            return self.table_hash(record, database), None
        values = [v for row in result for v in row]
        return json.dumps(values if values else ["none"], default=str), None

    def untouched_hash(self, record: dict[str, Any]) -> str | None:
        try:
            return self.table_hash(record, self.build(record))
        except RuntimeError:
            return None


def _parse(answer: str) -> list[Any]:
    # AgentBench: list(eval(ans)), else [ans]. Data only here, and JSON first: the gold policy's
    # answers are JSON (null for NULL), which eval would not read.
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(answer)
        except (ValueError, SyntaxError, TypeError):
            continue
        try:
            return list(value)
        except TypeError:
            return [value]
    return [answer]


def agentbench_accepts(answer: str | None, record: dict[str, Any]) -> bool:
    """calculate_overall's comparison for one task."""
    if answer is None:
        return False
    if record["type"][0] in MODIFICATIONS:
        return answer == record["answer_md5"]
    ans, cor = _parse(answer), record["label"]
    if len(ans) == 1 and len(cor) == 1:
        try:
            return float(ans[0]) == float(cor[0])
        except (ValueError, TypeError):
            return ans[0] == cor[0]
    try:
        return set(ans) == set(cor)
    except TypeError:
        return False


def wrong_answer(record: dict[str, Any]) -> str:
    label = list(record["label"])
    if not label:
        return '["wrong"]'
    try:
        label[0] = float(label[0]) + 1
    except (ValueError, TypeError):
        label[0] = f"{label[0]} (wrong)"
    return json.dumps(label)


# --- the environment ---------------------------------------------------------------------------


def environment_verdicts(engine: str, path: Path) -> tuple[dict[str, tuple[bool, bool]], list[float]]:
    """{task id: (gold passes, wrong answer passes)} and the seconds each episode took to open."""
    env = DBEnvironment(engine)
    tasks = env.load(path)
    verdicts: dict[str, tuple[bool, bool]] = {}
    opened: list[float] = []
    gold = {task.id: reward == 1.0 for task, reward, _ in env.verify(tasks)}
    for task in tasks:
        if task.unsupported:
            verdicts[task.id] = (False, False)
            continue
        began = time.perf_counter()
        with env.episode(task) as episode:
            opened.append(time.perf_counter() - began)
            modifies = task.raw["type"][0] in MODIFICATIONS
            wrong = episode.reward("done" if modifies else wrong_answer(task.raw)) == 1.0
        verdicts[task.id] = (gold[task.id], wrong)
    return verdicts, opened


def oracle_verdicts(oracle: Oracle, path: Path) -> tuple[dict[str, tuple[bool, bool]], dict[str, str]]:
    verdicts, errors = {}, {}
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        task_id = f"{path.stem}-{index:05d}"
        answer, error = oracle.gold(record)
        gold = agentbench_accepts(answer, record)
        if record["type"][0] in MODIFICATIONS:
            wrong = agentbench_accepts(oracle.untouched_hash(record), record)
        else:
            wrong = agentbench_accepts(wrong_answer(record), record)
        verdicts[task_id] = (gold, wrong)
        if not gold:
            errors[task_id] = error or f"the gold result {answer} is not the label {record.get('label')}"
    return verdicts, errors


# Values where MySQL's semantics show: case, accents, trailing and non-breaking spaces, numbers
# held as text (with commas, exponents, junk), empty strings and NULLs.
NAMES = ("Anna", "anna", "José", "Jose", "Zoë", "Ann\u00a0Lee", "Ann Lee", "Bob ", "BOB", "Émile", "Li")
CITIES = ("Oslo", "oslo", "Rome", "Köln", "Koln", "São Paulo", "Sao Paulo", "")
SCORES = ("5", "12", "9", "100", "7.5", "-3", "", None, "n/a", "10")
AMOUNTS = ("1,429", "250", "3.5", "1e3", " 42", "12abc", "0", "17")
TRICKY = (
    ("counting", "SELECT COUNT(*) FROM `People` WHERE `Name` = '{name}'"),
    ("other", 'SELECT `City` FROM `People` WHERE `Name` = "{name}"'),
    ("other", "SELECT `Name` FROM `People` WHERE `City` LIKE '%{fragment}%'"),
    ("aggregation-SUM", "SELECT SUM(`Amount`) FROM `People` WHERE `City` = '{city}'"),
    ("aggregation-AVG", "SELECT AVG(`Score`) FROM `People` WHERE `Score` > {number}"),
    ("aggregation-MAX", "SELECT MAX(`Score`) FROM `People`"),
    ("aggregation-MIN", "SELECT MIN(`Amount` + 0) FROM `People`"),
    ("ranking", "SELECT `Name` FROM `People` ORDER BY `Score` + 0 DESC, `Name` LIMIT 1"),
    ("counting", "SELECT COUNT(DISTINCT `City`) FROM `People`"),
    ("comparison", "SELECT `Name` FROM `People` WHERE `Score` BETWEEN {number} AND 20"),
    ("comparison", "SELECT `Name` FROM `People` WHERE `Score` > '{score}'"),
    ("other", "SELECT `City`, COUNT(*) FROM `People` GROUP BY `City` ORDER BY COUNT(*) DESC, `City` LIMIT 1"),
    ("UPDATE", "UPDATE `People` SET `Score` = `Score` + 1 WHERE `Name` = '{name}'"),
    ("UPDATE", "UPDATE `People` SET `City` = '{city}' WHERE `Name` = '{name}'"),
    ("DELETE", "DELETE FROM `People` WHERE `Score` < {number}"),
    ("INSERT", "INSERT INTO `People` (`Name`, `City`) VALUES ('{name}', '{city}')"),
)


def tricky_records(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` tasks over small tables of awkward values (labels still empty)."""
    rng = random.Random(seed)
    columns = ["Name", "City", "Score", "Amount"]
    records = []
    for i in range(n):
        rows = [
            [rng.choice(NAMES), rng.choice(CITIES), rng.choice(SCORES), rng.choice(AMOUNTS)]
            for _ in range(rng.randint(4, 12))
        ]
        kind, template = TRICKY[i % len(TRICKY)]
        sql = template.format(
            name=rng.choice(NAMES), city=rng.choice(CITIES), fragment=rng.choice(("o", "ö", "an", "AN", " ")),
            number=rng.choice((0, 5, 7.5, 10)), score=rng.choice(("10", "5", "9")),
        )  # fmt: skip
        records.append({
            "description": f"Tricky task {i}.", "add_description": "The name of this table is People.",
            "type": [kind], "label": [sql] if kind in MODIFICATIONS else [], "sql": {"query": sql},
            "table": {"table_name": "People", "table_info": {
                "columns": [{"name": c, "type": "TEXT"} for c in columns], "rows": rows}},
        })  # fmt: skip
    return records


def generated_tasks(oracle: Oracle, n: int, out: Path) -> int:
    """`n` dbgen tasks over every domain and `n` tricky ones, labelled by the oracle; returns how
    many were written (tasks whose gold SQL fails at the oracle are left out)."""
    records = dbgen.generate(dbgen.TRAIN_DOMAINS + dbgen.HELDOUT_DOMAINS, n, seed=1) + tricky_records(
        n, seed=2
    )
    kept = []
    for record in records:
        answer, error = oracle.gold(record)
        if error:
            continue
        if record["type"][0] in MODIFICATIONS:
            record["answer_md5"] = answer
        else:
            record["label"] = json.loads(answer)
        kept.append(record)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    return len(kept)


def agreement(
    ours: dict[str, tuple[bool, bool]], oracle: dict[str, tuple[bool, bool]], sql: dict[str, str]
) -> tuple[int, int, list]:
    same, total, differ = 0, 0, []
    for task_id, (gold, wrong) in oracle.items():
        mine = ours[task_id]
        for case, expected, got in (("gold", gold, mine[0]), ("wrong", wrong, mine[1])):
            total += 1
            same += expected == got
            if expected != got:
                verdicts = f"oracle {'passes' if expected else 'fails'}, here {'passes' if got else 'fails'}"
                differ.append(f"{task_id} {case}: {verdicts}: {sql[task_id]}")
    return same, total, differ


def gold_sql(path: Path) -> dict[str, str]:
    out = {}
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        sql = record["label"][0] if record["type"][0] in MODIFICATIONS else record["sql"]["query"]
        out[f"{path.stem}-{index:05d}"] = sql
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=240, help="generated tasks to add to the dev set")
    parser.add_argument("--engines", nargs="+", default=["mariadb", "duckdb"])
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    began = time.perf_counter()
    oracle = Oracle()
    server_start_s = time.perf_counter() - began
    figures: dict[str, Any] = {"oracle_server_start_s": round(server_start_s, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        generated = Path(tmp) / "dbgen.jsonl"
        figures["generated_tasks"] = generated_tasks(oracle, args.generated, generated)
        sets = {"dev": DEV, "generated": generated}
        truth = {}
        for name, path in sets.items():
            truth[name], errors = oracle_verdicts(oracle, path)
            if name == "dev":
                figures["dev_gold_fails_at_oracle"] = errors
                print(f"dev tasks whose gold fails at the oracle (the dataset's own errors): {len(errors)}")
                for task_id, error in errors.items():
                    print(f"  {task_id}: {error[:160]}")
        for engine in args.engines:
            opened_all = []
            for name, path in sets.items():
                ours, opened = environment_verdicts(engine, path)
                opened_all += opened
                same, total, differ = agreement(ours, truth[name], gold_sql(path))
                figures[f"{name}_agreement_{engine}"] = round(same / total, 4)
                figures[f"{name}_cases_{engine}"] = total
                figures[f"{name}_disagreements_{engine}"] = differ
                print(
                    f"{engine:8s} {name:9s}: {same}/{total} verdicts agree with the oracle ({same / total:.1%})"
                )
                for line in differ:
                    print(f"    {line}")
            figures[f"episode_open_ms_{engine}"] = round(1000 * statistics.median(opened_all), 2)
            print(f"{engine:8s} opening a task's database: {figures[f'episode_open_ms_{engine}']} ms median")
    oracle.server.stop()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

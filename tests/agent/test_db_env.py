"""DBEnvironment on AgentBench's dbbench dev set, on MariaDB and on the DuckDB port: the gold
policy passes where AgentBench's MySQL passes it, wrong answers fail."""

import json
from pathlib import Path

import pytest

from agentlm.agent.envs import db as db_module
from agentlm.agent.envs.base import TaskFileError
from agentlm.agent.envs.db import DBEnvironment, answers_match, db_engine, parse_answer
from agentlm.agent.protocols import db_opening
from agentlm.agent.tools import mariadb as mariadb_module
from agentlm.agent.tools.mysql_duckdb import agentbench_table_hash, mysql_to_duckdb

DEV = Path("/work/shared/agentbench/dbbench_dev.jsonl")
pytestmark = pytest.mark.skipif(not DEV.is_file(), reason=f"{DEV} is not here")

# Dev tasks whose gold SQL MySQL rejects (AgentBench's own run fails them too), by reason.
GOLD_SQL_FAILS = {
    0: "1064 (42000)",  # `SELECT Presentation of Credentials` (unquoted name with spaces)
    2: "Unknown column 'weeks_at_No_1'",  # the column is "weeks at No. 1"
    6: "Unknown column 'Wrestler'",  # the table's columns are "Date:", "Notes:", ...
    7: "1064 (42000)",  # `FROM 'Football Matches'`: a string where a table name goes
    8: "1064 (42000)",  # `AverageFROM [Football Team Performance]WHERE W-L-T ...`
    11: "1064 (42000)",  # `FROM table`: a reserved word
    13: "1064 (42000)",  # `DateFROM ... DESCLIMIT 1`
    18: "Baseball_Team_Record' doesn't exist",  # the table is "Baseball Team Record"
    19: "1064 (42000)",  # `AVG(Total)FROM Olympic_medal_countsWHERE ...`
}
# The DuckDB port cannot translate the gold SQL of these: it marks them unsupported at load.
UNTRANSLATABLE = {
    0: "not valid MySQL",
    2: "names column 'weeks_at_No_1'",
    6: "names column 'Wrestler'",
    8: "not valid MySQL",
    11: "names column 'Area'",
    13: "not valid MySQL",
    18: "names table 'Baseball_Team_Record'",
    19: "not valid MySQL",
}
EMPTY_COLUMN_NAME = 5  # column 0 is "": MySQL refuses the table, so no engine can run the task
# Tasks whose gold SQL runs but does not give the label (the gold policy scores 0 on AgentBench's
# MySQL too, which compares TEXT the same way).
GOLD_DISAGREES_WITH_LABEL = {
    1: 'LIKE \'%jimmy%\' finds "Checco D\'Angelo\\n \\"Jimmy\\""; the label is the cleaned name',
    12: "the SQL selects Player ('Magoffin'); the label is the Touchdowns value 2.0",
    15: "SUM(`Try bonus`) WHERE Points = 51 is 5 on this table; the label says 1.0",
    16: "MIN over TEXT is '13' (text order, as in MySQL); the label 5.0 is the numeric minimum",
    17: "MAX(Bronze) WHERE Silver = 0 is '5'; the label 'none' answers the question's '< 0'",
}


@pytest.fixture(scope="module", params=["mariadb", "duckdb"])
def env(request):
    return DBEnvironment(request.param)


@pytest.fixture(scope="module")
def tasks(env):
    return env.load(DEV)


def test_the_default_engine_is_mariadb_where_it_is_installed(monkeypatch):
    monkeypatch.delenv("AGENTLM_DB_ENGINE", raising=False)
    assert db_engine() == "mariadb"  # scripts/setup.sh installs it
    monkeypatch.setenv("AGENTLM_DB_ENGINE", "duckdb")
    assert db_engine() == "duckdb" and DBEnvironment().engine == "duckdb"
    monkeypatch.setenv("AGENTLM_DB_ENGINE", "sqlite")
    with pytest.raises(ValueError, match="use mariadb or duckdb"):
        db_engine()


def test_without_mariadb_the_tasks_run_on_duckdb_and_say_why(monkeypatch, caplog):
    monkeypatch.delenv("AGENTLM_DB_ENGINE", raising=False)
    monkeypatch.setattr(db_module, "mariadb_binaries", lambda: None)
    monkeypatch.setattr(db_module, "_warned_duckdb", False)
    with caplog.at_level("WARNING"):
        assert DBEnvironment().engine == "duckdb"
    assert "apt-get install mariadb-server" in caplog.text
    monkeypatch.setattr(mariadb_module, "mariadb_binaries", lambda: None)
    with pytest.raises(mariadb_module.MariaDBUnavailable, match="apt-get install mariadb-server"):
        mariadb_module.MariaDBServer()


def test_dev_set_loads_with_ids_and_unsupported_reasons(env, tasks):
    assert len(tasks) == 60
    assert tasks[7].id == "dbbench_dev-00007"
    unsupported = {i: t.unsupported for i, t in enumerate(tasks) if t.unsupported}
    expected = {EMPTY_COLUMN_NAME: "empty name"}
    if env.engine == "duckdb":
        expected |= UNTRANSLATABLE
    assert set(unsupported) == set(expected)
    for i, reason in expected.items():
        assert reason in unsupported[i]


def test_gold_policy_scores_one_where_agentbench_mysql_does(env, tasks):
    results = {i: (reward, note) for i, (_, reward, note) in enumerate(env.verify(tasks))}
    passed = sorted(i for i, (reward, _) in results.items() if reward == 1.0)
    failed = sorted(i for i, (reward, _) in results.items() if reward == 0.0)
    skipped = sorted(i for i, (reward, _) in results.items() if reward is None)
    modifications = sum(tasks[i].raw["type"][0] in ("INSERT", "UPDATE") for i in passed)
    # A reference that misses its label says what it answered and what the label is.
    assert results[16][1] == 'the answer ["13"] is not the label ["5.0"]'
    assert all(results[i][1] is None for i in passed)
    if env.engine == "mariadb":
        assert skipped == [EMPTY_COLUMN_NAME]
        assert failed == sorted({*GOLD_SQL_FAILS, *GOLD_DISAGREES_WITH_LABEL})
        for i, error in GOLD_SQL_FAILS.items():
            assert error in results[i][1], (i, results[i][1])  # MySQL's own error, named
        assert len(passed) == 45 and modifications == 40
    else:
        assert skipped == sorted({EMPTY_COLUMN_NAME, *UNTRANSLATABLE})
        # Task 7's `FROM 'Football Matches'` is an error in MySQL; sqlglot reads it as a table name.
        assert failed == sorted(GOLD_DISAGREES_WITH_LABEL)
        assert len(passed) == 46 and modifications == 40 and 7 in passed


def test_gold_modifications_reproduce_agentbench_table_hash(env, tasks):
    # AgentBench scored modifications by an md5 of the MySQL table; both engines compute the same.
    for task in tasks:
        if task.raw["type"][0] not in ("INSERT", "UPDATE", "DELETE"):
            continue
        with env.episode(task) as ep:
            before = ep.table_hash()
            assert ep.reference_answer() == "done"
            after = ep.table_hash()
            rows = ep.tool.table_rows(ep.table)
        assert task.raw["answer_md5"] == after != before, task.id
        assert after == f"[('{agentbench_table_hash(rows)}',)]"


def test_setup_is_agentbench_dbbench(env, tasks):
    with env.episode(tasks[3]) as ep:
        setup = ep.setup()
        assert setup.protocol == "db" and setup.max_rounds == 15 and setup.name == "dbbench_dev-00003"
        assert setup.prompt == db_opening() and setup.prompt[-1]["content"] == "Ok."
        assert setup.task == tasks[3].raw["description"] + "\n" + tasks[3].raw["add_description"]
        assert setup.tools["sql"] is ep.tool and ep.tool.render == "repr"


def test_observations_match_agentbench_repr(env, tasks):
    with env.episode(tasks[3]) as ep:  # skyscrapers_in_Columbus
        sql = ep.setup().tools["sql"]
        # The agent writes MySQL: backticks, and a TEXT column compared with a number.
        assert (
            sql.invoke("SELECT `Floors` FROM `skyscrapers_in_Columbus` WHERE Name = 'Capitol Square'")
            == "[('26',)]"
        )
        rows = tasks[3].raw["table"]["table_info"]["rows"]
        tall = sum(int(r[3]) > 30 for r in rows)  # compared as numbers, as MySQL does
        assert sql.invoke("SELECT COUNT(*) FROM skyscrapers_in_Columbus WHERE Floors > 30") == f"[({tall},)]"
        assert sql.invoke("SELECT name FROM skyscrapers_in_Columbus WHERE name = 'capitol square'") == (
            "[('Capitol Square',)]"  # MySQL's default collation ignores case
        )
        long = sql.invoke("SELECT * FROM skyscrapers_in_Columbus")
        assert (
            len(long) == 800 + len("[TRUNCATED]") and long.endswith("[TRUNCATED]") and long.startswith("[('")
        )
        two = sql.invoke("SELECT 1; SELECT 2")
        if env.engine == "mariadb":  # one statement a call, and MySQL's own words for the rest
            assert two.startswith("1064 (42000): You have an error in your SQL syntax")
            assert sql.invoke("SELECT Height FROM skyscrapers_in_Columbus") == (
                "1054 (42S22): Unknown column 'Height' in 'SELECT'"
            )
        else:
            assert two.startswith("Error: send exactly one")
    with env.episode(tasks[14]) as ep:
        assert (
            ep.tool.invoke("SELECT SUM(Ends) FROM football_players WHERE `Transfer fee` = '£8.5m'")
            == "[(2011.0,)]"
        )


def test_wrong_answers_score_zero(env, tasks):
    with env.episode(tasks[3]) as ep:
        assert ep.reward('["26"]') == ep.reward("26") == ep.reward("[26]") == 1.0
        assert ep.reward('["25"]') == ep.reward("") == ep.reward(None) == 0.0
        assert ep.reward('["26", "27"]') == 0.0
    insert = next(t for t in tasks if t.raw["type"][0] == "INSERT")
    inserted = "[]" if env.engine == "mariadb" else "[(1,)]"  # MySQL's INSERT returns no rows
    with env.episode(insert) as ep:
        assert ep.reward("done") == 0.0  # doing nothing
    with env.episode(insert) as ep:
        table = ep.table
        assert ep.tool.invoke(f"INSERT INTO `{table}` (`School`) VALUES ('Madison High School')") == inserted
        assert ep.reward("done") == 0.0  # a wrong row
    with env.episode(insert) as ep:
        ep.tool.invoke(insert.raw["label"][0])
        assert ep.reward("anything") == 1.0
        ep.tool.invoke(f"DELETE FROM `{ep.table}` WHERE `Location` = 'San Diego'")
        assert ep.reward("anything") == 0.0
    with env.episode(insert) as ep:
        ep.tool.invoke(f"DROP TABLE `{ep.table}`")
        assert ep.reward("anything") == 0.0  # no table, no hash


def test_agent_updates_in_mysql_dialect_score_one(env, tasks):
    task = next(t for t in tasks if t.raw["type"][0] == "UPDATE")
    with env.episode(task) as ep:
        out = ep.tool.invoke(
            "UPDATE `Football Team Results` SET `Wins`='5', `Byes`='3', `Losses`='8', `Draws`='2', "
            "`Against`='1305' WHERE `Ballarat FL`=\"Creswick\""
        )
        assert out == ("[]" if env.engine == "mariadb" else "[(1,)]")
        assert ep.reward("done") == 1.0
        if env.engine == "duckdb":
            before = ep.database.read_bytes()
    if env.engine == "duckdb":
        assert ep.tool.pending_writes == []  # closing the episode discarded the scratch copy
        assert not ep.database.exists() and before
    else:
        with pytest.raises(Exception, match="closed"):
            ep.tool.run_rows("SELECT 1")


def test_reward_parsing_never_evaluates_code(env, tasks, tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    assert parse_answer(payload) == [payload]
    with env.episode(tasks[3]) as ep:
        assert ep.reward(payload) == 0.0
        assert ep.reward(f"[{payload}]") == 0.0
    assert not marker.exists()
    assert parse_answer("[" * 100_000) == ["[" * 100_000]  # deep nesting is just a string


def test_answer_comparison():
    assert parse_answer('["a", "b"]') == ["a", "b"] and parse_answer("('a', 1)") == ["a", 1]
    assert parse_answer("Giza") == ["Giza"] and parse_answer("2011") == [2011]
    assert answers_match([2011], ["2011.0"]) and answers_match(["1.0000001"], ["1"])
    assert not answers_match(["1.01"], ["1"])
    assert answers_match(["K1", "K2", "K2"], ["K2", "K1"])  # sets
    assert not answers_match(["K1"], ["K1", "K2"]) and not answers_match(["K1", "K3"], ["K1", "K2"])
    assert answers_match(["3", "x", 2.0000000001], ["x", 2, 3.0])
    assert answers_match(["Giza"], ["Giza"]) and not answers_match(["giza"], ["Giza"])
    assert not answers_match([], ["none"])


def test_mysql_translation():
    assert mysql_to_duckdb("SELECT `a b` FROM `t` WHERE c < 5 LIMIT 1, 2") == (
        'SELECT "a b" FROM "t" WHERE TRY_CAST(c AS DOUBLE) < 5 LIMIT 2 OFFSET 1'
    )
    assert mysql_to_duckdb("SHOW COLUMNS FROM `My Table`") == 'DESCRIBE "My Table"'
    # An UPDATE's SET assigns: its target stays a column; its WHERE still compares as numbers.
    assert mysql_to_duckdb("UPDATE t SET Gold = 2, `Note` = 'x' WHERE Silver > 3") == (
        "UPDATE t SET Gold = 2, \"Note\" = 'x' WHERE TRY_CAST(Silver AS DOUBLE) > 3"
    )
    with pytest.raises(Exception, match="not supported here"):
        mysql_to_duckdb("REPLACE INTO t VALUES (1)")


def bad_file(tmp_path, record, index=0) -> Path:
    good = json.loads(DEV.read_text().splitlines()[3])
    lines = [json.dumps(good)] * index + [json.dumps(record)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("description"), "description"),
        (lambda r: r.update(type="SELECT"), "type"),
        (lambda r: r["table"].pop("table_name"), "table.table_name"),
        (lambda r: r["table"]["table_info"]["rows"][2].pop(), "table.table_info.rows[2]"),
        (lambda r: r.pop("sql"), "sql.query"),
        (lambda r: r.update(label="26"), "label"),
    ],
)
def test_malformed_task_file_names_file_task_and_field(env, tmp_path, change, field):
    record = json.loads(DEV.read_text().splitlines()[3])
    change(record)
    path = bad_file(tmp_path, record, index=2)
    with pytest.raises(TaskFileError) as e:
        env.load(path)
    assert str(path) in str(e.value) and "task 2" in str(e.value) and repr(field) in str(e.value)


def test_invalid_json_line(env, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(DEV.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(TaskFileError, match=r"broken.jsonl: task 1: not valid JSON"):
        env.load(path)


@pytest.mark.parametrize(
    ("table", "column", "why"),
    [
        ("x" * 65, "a", "over 64 characters"),
        ("Results ", "a", "ends with a space"),
        ("Results", "a ", "ends with a space"),
        ("Results", "", "empty name"),
    ],
)
def test_tables_mysql_refuses_are_unsupported_with_the_reason(env, tmp_path, table, column, why):
    record = json.loads(DEV.read_text().splitlines()[3])
    record["table"]["table_name"] = table
    record["table"]["table_info"]["columns"][0]["name"] = column
    (task,) = env.load(bad_file(tmp_path, record))
    assert task.unsupported and why in task.unsupported

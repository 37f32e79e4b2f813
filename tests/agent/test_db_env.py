"""DBEnvironment on AgentBench's dbbench dev set: the gold policy passes, wrong answers fail."""

import json
from pathlib import Path

import pytest

from agentlm.agent.envs.base import TaskFileError
from agentlm.agent.envs.db import (
    DBEnvironment,
    agentbench_table_hash,
    answers_match,
    mysql_to_duckdb,
    parse_answer,
)
from agentlm.agent.protocols import db_opening

DEV = Path("/work/shared/agentbench/dbbench_dev.jsonl")
pytestmark = pytest.mark.skipif(not DEV.is_file(), reason=f"{DEV} is not here")

# Dev tasks whose gold SQL cannot run here (marked unsupported at load), by reason.
UNSUPPORTED = {
    0: "not valid MySQL",  # `SELECT Presentation of Credentials` (unquoted name with spaces)
    2: "names column 'weeks_at_No_1'",  # the column is "weeks at No. 1"
    5: "empty name",  # column 0 is "", which MySQL refuses as well
    6: "names column 'Wrestler'",  # the table's columns are "Date:", "Notes:", ...
    8: "not valid MySQL",  # `AverageFROM [Football Team Performance]WHERE W-L-T ...`
    11: "names column 'Area'",  # the column is "Area (km²)"; `FROM table` is reserved in MySQL
    13: "not valid MySQL",  # `DateFROM ... DESCLIMIT 1`
    18: "names table 'Baseball_Team_Record'",  # the table is "Baseball Team Record"
    19: "not valid MySQL",  # `AVG(Total)FROM Olympic_medal_countsWHERE ...`
}
# Tasks whose gold SQL runs but does not give the label (the gold policy scores 0; so would
# AgentBench's MySQL, which compares TEXT the same way).
GOLD_DISAGREES_WITH_LABEL = {
    1: 'LIKE \'%jimmy%\' finds "Checco D\'Angelo\\n \\"Jimmy\\""; the label is the cleaned name',
    12: "the SQL selects Player ('Magoffin'); the label is the Touchdowns value 2.0",
    15: "SUM(`Try bonus`) WHERE Points = 51 is 5 on this table; the label says 1.0",
    16: "MIN over TEXT is '13' (text order, as in MySQL); the label 5.0 is the numeric minimum",
    17: "MAX(Bronze) WHERE Silver = 0 is '5'; the label 'none' answers the question's '< 0'",
}


@pytest.fixture(scope="module")
def env():
    return DBEnvironment()


@pytest.fixture(scope="module")
def tasks(env):
    return env.load(DEV)


def test_dev_set_loads_with_ids_and_unsupported_reasons(tasks):
    assert len(tasks) == 60
    assert tasks[7].id == "dbbench_dev-00007"
    unsupported = {i: t.unsupported for i, t in enumerate(tasks) if t.unsupported}
    assert set(unsupported) == set(UNSUPPORTED)
    for i, reason in UNSUPPORTED.items():
        assert reason in unsupported[i]


def test_gold_policy_scores_one_on_every_task_that_runs(env, tasks):
    results = {i: (reward, note) for i, (_, reward, note) in enumerate(env.verify(tasks))}
    passed = sorted(i for i, (reward, _) in results.items() if reward == 1.0)
    failed = sorted(i for i, (reward, _) in results.items() if reward == 0.0)
    skipped = sorted(i for i, (reward, _) in results.items() if reward is None)
    assert all(note is None for reward, note in results.values() if reward is not None)
    assert skipped == sorted(UNSUPPORTED)
    assert failed == sorted(GOLD_DISAGREES_WITH_LABEL)
    assert len(passed) == 46  # 40 INSERT/UPDATE + 6 queries
    assert sum(tasks[i].raw["type"][0] in ("INSERT", "UPDATE") for i in passed) == 40


def test_gold_modifications_reproduce_agentbench_table_hash(env, tasks):
    # AgentBench scored modifications by an md5 of the MySQL table; ours matches it on every task.
    for task in tasks:
        if task.raw["type"][0] not in ("INSERT", "UPDATE", "DELETE"):
            continue
        with env.episode(task) as ep:
            before = agentbench_table_hash(ep.tool.table_rows(ep.table))
            assert ep.reference_answer() == "done"
            after = agentbench_table_hash(ep.tool.table_rows(ep.table))
        assert task.raw["answer_md5"] == f"[('{after}',)]" != f"[('{before}',)]", task.id


def test_setup_is_agentbench_dbbench(env, tasks):
    with env.episode(tasks[3]) as ep:
        setup = ep.setup()
        assert setup.protocol == "db" and setup.max_rounds == 15 and setup.name == "dbbench_dev-00003"
        assert setup.prompt == db_opening() and setup.prompt[-1]["content"] == "Ok."
        assert setup.task == tasks[3].raw["description"] + "\n" + tasks[3].raw["add_description"]
        tool = setup.tools["sql"]
        assert tool.writes == "scratch" and tool.render == "repr"


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
        assert sql.invoke("SELECT 1; SELECT 2").startswith("Error: send exactly one")
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
    with env.episode(insert) as ep:
        assert ep.reward("done") == 0.0  # doing nothing
    with env.episode(insert) as ep:
        table = ep.table
        assert ep.tool.invoke(f"INSERT INTO `{table}` (`School`) VALUES ('Madison High School')") == "[(1,)]"
        assert ep.reward("done") == 0.0  # a wrong row
    with env.episode(insert) as ep:
        ep.tool.invoke(insert.raw["label"][0])
        assert ep.reward("anything") == 1.0
        ep.tool.invoke(f"DELETE FROM `{ep.table}` WHERE `Location` = 'San Diego'")
        assert ep.reward("anything") == 0.0


def test_agent_updates_in_mysql_dialect_score_one(env, tasks):
    task = next(t for t in tasks if t.raw["type"][0] == "UPDATE")
    with env.episode(task) as ep:
        out = ep.tool.invoke(
            "UPDATE `Football Team Results` SET `Wins`='5', `Byes`='3', `Losses`='8', `Draws`='2', "
            "`Against`='1305' WHERE `Ballarat FL`=\"Creswick\""
        )
        assert out == "[(1,)]"
        assert ep.reward("done") == 1.0
        before = ep.database.read_bytes()
    assert ep.tool.pending_writes == []  # closing the episode discarded the scratch copy
    assert not ep.database.exists() and before


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

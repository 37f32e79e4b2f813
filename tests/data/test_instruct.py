"""Instruction construction: a scripted teacher on 127.0.0.1 proposes tasks; only verified ones are kept."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading

import pytest
from localhttp import Handler, serve
from tasksystems import needs_system

from agentlm.agent.envs.db import DBEnvironment
from agentlm.agent.envs.os import OSEnvironment
from agentlm.agent.models import OpenAIChatModel
from agentlm.data.instruct import construct, main

USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}


def teacher(replies: list):
    """A chat completions endpoint that answers each request with the next scripted reply (an int: that
    HTTP error); it records the request bodies."""
    seen: list[dict] = []
    lock = threading.Lock()

    class Teacher(Handler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append(body)
                reply = replies.pop(0)
            if isinstance(reply, int):
                error = {"error": {"message": "no", "type": "invalid_request_error", "code": None}}
                self.send(reply, json.dumps(error).encode(), "application/json")
                return
            text = reply if isinstance(reply, str) else json.dumps(reply)
            self.send(200, json.dumps({
                "id": "c", "object": "chat.completion", "created": 0, "model": body["model"], "usage": USAGE,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            }).encode(), "application/json")  # fmt: skip

    return serve(Teacher), seen


def run(env, replies, out, n, workers=2, seed=0):
    server, seen = teacher(replies)
    with server as base:
        model = OpenAIChatModel("teacher", f"{base}/v1", timeout=20)
        report = construct(env, model, n, out, seed=seed, workers=workers, progress=False)
    return report, seen


def agentlm(*args):
    return subprocess.run(
        [sys.executable, "-m", "agentlm.cli", *args], capture_output=True, text=True, timeout=120
    )


TABLE = {
    "name": "Bakery Products",
    "columns": ["Product", "Category", "Price"],
    "rows": [["Croissant", "Pastry", 2.5], ["Baguette", "Bread", 3], ["Rye Loaf", "Bread", "4"],
             ["Eclair", "Pastry", "3.5"], ["Scone", "Pastry", "2"]],
}  # fmt: skip
COUNT = {
    "table": TABLE,
    "type": "counting",
    "question": "How many products are in the Bread category?",
    "sql": "SELECT COUNT(*) FROM `Bakery Products` WHERE `Category` = 'Bread';",
}
SUM = {
    "table": TABLE,
    "type": "aggregation-SUM",
    "question": "What is the total price of the Pastry products?",
    "sql": "SELECT SUM(`Price`) FROM `Bakery Products` WHERE `Category` = 'Pastry';",
}
UPDATE = {
    "table": TABLE,
    "type": "UPDATE",
    "question": "Change the Price of the Scone to 2.25 in 'Bakery Products'.",
    "sql": "UPDATE `Bakery Products` SET `Price` = '2.25' WHERE `Product` = 'Scone';",
}
WRONG_SQL = {**COUNT, "sql": "SELECT COUNT(*) FROM `Bakery Products` WHERE `Kind` = 'Bread';"}
MISSING = {k: v for k, v in COUNT.items() if k != "sql"}
WRONG_TYPE = {**COUNT, "table": {**TABLE, "rows": "five rows"}}


def test_db_proposals_are_kept_only_when_their_sql_passes_and_rejections_are_counted(tmp_path):
    out = tmp_path / "db.jsonl"
    replies = [
        COUNT,
        SUM,
        f"Here is the task:\n```json\n{json.dumps(UPDATE, indent=1)}\n```\nEnjoy!",
        WRONG_SQL,
        "Sure! Count the breads in the bakery table.",
        MISSING,
        WRONG_TYPE,
        400,
    ]
    report, seen = run("db", replies, out, n=8)
    assert report.proposed == 8 and report.kept == 3, report.why
    assert report.rejected == {
        "sql-failed": 1, "no-json": 1, "missing-field": 1, "wrong-type": 1, "teacher-error": 1,
    }  # fmt: skip
    assert report.prompt_tokens == 700 and report.completion_tokens == 350  # the failed request has none
    assert "Kind" in next(w for w in report.why.values() if w.startswith("sql-failed"))
    lines = report.lines()
    assert lines[0].startswith("8 proposed, 3 kept, 5 rejected (") and "1 no-json" in lines[0]
    assert lines[1] == "tokens: 700 prompt, 350 completion"

    prompts = [body["messages"][-1]["content"] for body in seen]
    assert all("one JSON object" in p for p in prompts) and len(set(prompts)) > 1  # the seed varies them

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["id"] for r in records}) == 3
    by_type = {r["type"][0]: r for r in records}
    assert by_type["counting"]["label"] == [2] and by_type["aggregation-SUM"]["label"] == [8.0]
    assert by_type["UPDATE"]["label"] == [UPDATE["sql"]]
    for r in records:  # dbbench's shape, as dbgen writes it
        assert set(r) >= {"description", "label", "table", "type", "heads", "add_description", "sql"}
        assert r["heads"] == TABLE["columns"] and r["table"]["table_info"]["rows"][0] == [
            "Croissant",
            "Pastry",
            "2.5",
        ]
        assert r["add_description"] == (
            "The name of this table is Bakery Products, and the headers of this table are Product,Category,Price."
        )
    env = DBEnvironment()
    tasks = env.load(out)
    assert [t.unsupported for t in tasks] == [None] * 3
    assert [reward for _, reward, _ in env.verify(tasks)] == [1.0] * 3

    # Resuming: the kept tasks count toward --n; the rejected ones are asked again, up to --n.
    again, seen = run("db", [], out, n=3)
    assert (again.already, again.proposed, seen) == (3, 0, [])
    again, seen = run("db", [copy.deepcopy(SUM)], out, n=4)
    assert (again.already, again.proposed, again.kept, len(seen)) == (3, 1, 1, 1)
    assert len(out.read_text().splitlines()) == 4

    verify = agentlm("tasks", "verify", str(out))
    assert verify.returncode == 0 and verify.stdout.strip().splitlines()[-1] == "4/4 passed", verify.stdout


COUNT_TXT = {
    "description": "How many .txt files are in /root/docs? Answer with the number only.",
    "init": "mkdir -p /root/docs && touch /root/docs/a.txt /root/docs/b.txt /root/docs/c.txt /root/docs/d.log",
    "solution": "ls /root/docs/*.txt | wc -l",
    "check": '[ "$(echo $1)" -eq "$(echo $2)" ]',  # $2 is the raw output, newline and all
}
LINES = {
    "description": "How many lines does /home/notes/list.txt have? Answer with the number only.",
    "init": "mkdir -p /home/notes && printf 'a\\nb\\nc\\n' > /home/notes/list.txt",
    "solution": "wc -l < /home/notes/list.txt",
    "answer": "3",
}
WRONG_ANSWER = {**LINES, "answer": "4"}
FAILING_CHECK = {**COUNT_TXT, "check": '[ "$1" -eq 99 ]'}
LENIENT = {**COUNT_TXT, "check": "exit 0"}
NEEDS_INTERNET = {**LINES, "init": f"apt-get install -y jq && {LINES['init']}"}


@needs_system
def test_os_proposals_are_kept_only_when_their_solution_passes_its_own_check(tmp_path):
    out = tmp_path / "os.jsonl"
    replies = [COUNT_TXT, LINES, WRONG_ANSWER, FAILING_CHECK, LENIENT, NEEDS_INTERNET]
    report, seen = run("os", replies, out, n=6)
    assert report.kept == 2 and report.rejected == {
        "check-failed": 2, "check-too-lenient": 1, "unsupported": 1,
    }, report.why  # fmt: skip
    assert all("one JSON object" in body["messages"][-1]["content"] for body in seen)

    records = {r["description"]: r for r in map(json.loads, out.read_text().splitlines())}
    check = records[COUNT_TXT["description"]]
    assert check["evaluation"] == {
        "check": [None, {"language": "bash", "code": COUNT_TXT["check"]}],
        "example": {"code": COUNT_TXT["solution"]},
    }
    assert check["create"] == {"local": "default", "init": {"code": COUNT_TXT["init"]}}
    assert records[LINES["description"]]["evaluation"]["match"] == "3"

    env = OSEnvironment()
    tasks = env.load(out)
    assert [reward for _, reward, _ in env.verify(tasks)] == [1.0, 1.0]
    verify = agentlm("tasks", "verify", str(out))
    assert verify.returncode == 0 and verify.stdout.strip().splitlines()[-1] == "2/2 passed", verify.stdout


def test_the_command_prints_the_summary_and_refuses_an_os_file_it_could_not_append_to(tmp_path, capsys):
    server, _ = teacher([COUNT, "no json here"])
    out = tmp_path / "t.jsonl"
    with server as base:
        result = agentlm(
            "data", "instruct", "--env", "db", "--n", "2", "--out", str(out), "--model", "t",
            "--base-url", f"{base}/v1", "--workers", "1", "--seed", "7", "--quiet",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 proposed, 1 kept, 1 rejected (1 no-json)" in result.stdout
    assert "tokens: 200 prompt, 100 completion" in result.stdout
    assert json.loads(out.read_text())["id"].startswith("instruct-db-7-")
    with pytest.raises(SystemExit):
        main(
            [
                "--env",
                "os",
                "--out",
                str(tmp_path / "os.json"),
                "--model",
                "t",
                "--base-url",
                "http://127.0.0.1:9",
            ]
        )
    assert "must end in .jsonl" in capsys.readouterr().err

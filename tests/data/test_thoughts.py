"""Thought supplementation with a teacher endpoint on 127.0.0.1."""

from __future__ import annotations

import json

from localhttp import Handler, serve

from agentlm.agent.actions import parse_db_reply, parse_os_reply
from agentlm.data.stats import compute
from agentlm.data.thoughts import lacks_thought, main


def teacher():
    seen = []

    class Teacher(Handler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body["messages"])
            reply = {"id": "c", "object": "chat.completion", "created": 0, "model": "t",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "I need the count first."}, "finish_reason": "stop"}]}  # fmt: skip
            self.send(200, json.dumps(reply).encode(), "application/json")

    return serve(Teacher), seen


def record(rid, replies):
    turns = [
        {"from": "human", "loss": None, "value": "instruction"},
        {"from": "gpt", "loss": False, "value": "Ok."},
    ]
    for r in replies:
        turns += [
            {"from": "human", "loss": None, "value": "task or observation"},
            {"from": "gpt", "loss": True, "value": r},
        ]
    return {"id": rid, "conversations": turns}


DB_BARE = "Action: Operation\n```sql\nSELECT count(*) FROM t;\n```"
OS_BARE = "Act: bash\n\n```bash\nls | wc -l\n```"
DB_FULL = "I count the rows.\nAction: Operation\n```sql\nSELECT 1;\n```"


def test_which_replies_lack_a_thought():
    assert lacks_thought(DB_BARE) and lacks_thought(OS_BARE)
    assert not lacks_thought(DB_FULL) and not lacks_thought("Think: x\n\nAct: finish")


def test_bare_actions_get_a_teacher_thought_and_the_record_is_marked(tmp_path, capsys):
    data = tmp_path / "t.jsonl"
    data.write_text(
        "\n".join(json.dumps(r) for r in [record("bare", [DB_BARE, OS_BARE]), record("full", [DB_FULL])])
    )
    server, seen = teacher()
    with server as base:
        main(
            [
                "--data",
                str(data),
                "--out",
                str(tmp_path / "o.jsonl"),
                "--teacher",
                "t",
                "--base-url",
                f"{base}/v1",
            ]
        )
    out = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert "1 of 2 records" in capsys.readouterr().out and len(seen) == 2  # only the bare replies asked
    bare, full = out
    assert bare["thought_supplemented"] is True and "thought_supplemented" not in full
    db_reply, os_reply = bare["conversations"][3]["value"], bare["conversations"][5]["value"]
    assert parse_db_reply(db_reply, repair=False).thought == "I need the count first."
    assert parse_os_reply(os_reply, repair=False).thought == "I need the count first."
    assert bare["conversations"][1]["value"] == "Ok."  # the prompt's turns are never touched
    assert (
        seen[0][-1]["content"].startswith("Here is an agent's next action")
        and DB_BARE in seen[0][-1]["content"]
    )
    stats = compute([tmp_path / "o.jsonl"], lambda t: len(t.split()))
    assert stats["o"].thought_supplemented == 1

"""Trajectory collection over the AgentBench environments: scripted teacher, endpoint teacher, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from localhttp import Handler, serve
from tasksystems import needs_system

from agentlm.agent.actions import PARSERS, FinalAnswer
from agentlm.agent.envs.db import DBEnvironment
from agentlm.agent.envs.os import OSEnvironment
from agentlm.agent.protocols import db_opening, os_opening
from agentlm.agent.trajectory import ToolCall
from agentlm.data.collect import collect, endpoint_teacher, scripted_teacher
from agentlm.data.formats import read_jsonl

AGENTBENCH = Path(__file__).resolve().parents[3] / "shared" / "agentbench"


@pytest.fixture(scope="module")
def db_tasks():
    env = DBEnvironment()
    return env, env.load(AGENTBENCH / "dbbench_dev.jsonl")


def test_the_scripted_teacher_collects_exactly_the_tasks_whose_reference_passes(db_tasks, tmp_path):
    env, tasks = db_tasks
    out = tmp_path / "db.jsonl"
    report = collect(
        env, tasks, out, scripted_teacher, workers=2, source="collect/db/scripted", progress=False
    )
    verified = {task.id for task, reward, _ in env.verify(tasks) if reward == 1.0}
    kept = read_jsonl(out)
    assert env.engine == "mariadb"
    assert {c.id for c in kept} == verified and report.kept == len(verified) == 45
    # 9 gold statements MySQL rejects and 5 labels the gold result is not; 1 table MySQL refuses.
    assert report.rejected == 14 and report.skipped_unsupported == 1
    assert report.attempts == 45 + 14 * 3  # a rejected task is retried up to 3 times
    opening = db_opening()
    for conv in kept:
        # AgentInstruct's shape: the prompt's "Ok." is never trained on, the teacher's turns are.
        assert [t.content for t in conv.turns[:2]] == [m["content"] for m in opening]
        assert [t.loss for t in conv.turns[:3]] == [None, False, None]
        action, answer = conv.turns[3], conv.turns[-1]
        assert action.loss is True and answer.loss is True and conv.source == "collect/db/scripted"
        assert isinstance(PARSERS["db"](action.content).action, ToolCall)
        assert isinstance(PARSERS["db"](answer.content).action, FinalAnswer)


@needs_system
def test_os_collection_acts_out_the_example_scripts_in_the_task_system(tmp_path):
    env = OSEnvironment()
    tasks = env.load(AGENTBENCH / "os_dev.json")
    out = tmp_path / "os.jsonl"
    report = collect(env, tasks, out, scripted_teacher, progress=False)
    kept = read_jsonl(out)
    # All 26 run, each as root in its own system; 5 ship only a gold answer, nothing to act out.
    assert report.kept == len(kept) == 21 and report.rejected == 0
    assert sum("no reference action" in why for why in report.reasons.values()) == 5
    for conv in kept:
        assert conv.turns[0].content == os_opening()[0]["content"]
        reply = PARSERS["os"](conv.turns[-3].content).action
        assert isinstance(reply, ToolCall) and reply.name == "bash"
        assert conv.turns[-2].content.startswith("The output of the OS")


def test_collection_resumes_and_drops_a_record_cut_by_a_kill(db_tasks, tmp_path):
    env, tasks = db_tasks
    out = tmp_path / "db.jsonl"
    first = collect(env, tasks[:10], out, scripted_teacher, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    # A run killed mid-write leaves half a record at the end.
    out.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    again = collect(env, tasks[:20], out, scripted_teacher, progress=False)
    ids = [c.id for c in read_jsonl(out)]
    assert len(ids) == len(set(ids))  # nothing twice
    assert again.skipped_done == first.kept - 1  # the cut record is collected again
    full = collect(env, tasks[:20], tmp_path / "fresh.jsonl", scripted_teacher, progress=False)
    assert sorted(ids) == sorted(c.id for c in read_jsonl(tmp_path / "fresh.jsonl")) and full.kept == len(ids)


def test_a_broken_record_in_the_middle_stops_with_the_file_and_offset(db_tasks, tmp_path):
    env, tasks = db_tasks
    out = tmp_path / "db.jsonl"
    out.write_text('{"id": "a", "conversations": []}\nnot json\n{"id": "b", "conversations": []}\n')
    with pytest.raises(ValueError, match="broken record after byte"):
        collect(env, tasks[:1], out, scripted_teacher, progress=False)


def endpoint(replies: list[str]):
    """An OpenAI-compatible teacher on 127.0.0.1 that replies in turn and counts requests."""
    state = {"requests": 0}

    class Teacher(Handler):
        def do_POST(self):  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"] += 1
            text = replies[(state["requests"] - 1) % len(replies)]
            body = {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "teacher",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            }
            self.send(200, json.dumps(body).encode(), "application/json")

    return serve(Teacher), state


SQL = "SELECT Floors FROM skyscrapers_in_Columbus WHERE Name='Capitol Square';"
ACT = f"I look it up.\nActoin: Operation\n```sql\n{SQL}\n```"  # a malformed action line, repaired
WRONG = 'It is 30.\nAction: Answer\nFinal Answer: ["30"]'
RIGHT = 'The table says 26.\nAction: Answer\nFinal Answer: ["26"]'


def test_an_endpoint_teacher_is_retried_until_its_run_is_rewarded(db_tasks, tmp_path):
    env, tasks = db_tasks
    task = [t for t in tasks if t.id == "dbbench_dev-00003"]
    server, state = endpoint([ACT, WRONG, ACT, RIGHT])
    with server as base:
        report = collect(
            env, task, tmp_path / "t.jsonl", endpoint_teacher("teacher", f"{base}/v1"), progress=False
        )
    assert report.kept == 1 and report.attempts == 2 and state["requests"] == 4
    assert report.prompt_tokens == 400 and report.completion_tokens == 40 and report.repaired_steps == 2
    (conv,) = read_jsonl(tmp_path / "t.jsonl")
    assert conv.turns[-1].content == RIGHT  # the rewarded attempt is the one kept


def test_a_teacher_that_never_succeeds_is_rejected_after_three_attempts(db_tasks, tmp_path):
    env, tasks = db_tasks
    task = [t for t in tasks if t.id == "dbbench_dev-00003"]
    server, state = endpoint([WRONG])
    with server as base:
        report = collect(
            env, task, tmp_path / "t.jsonl", endpoint_teacher("teacher", f"{base}/v1"), progress=False
        )
    assert report.kept == 0 and report.rejected == 1 and state["requests"] == 3
    assert "reward 0.0 < 1.0" in report.reasons["dbbench_dev-00003"]
    assert not (tmp_path / "t.jsonl").exists()  # nothing kept, nothing written

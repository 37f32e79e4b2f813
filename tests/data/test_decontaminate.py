"""Decontamination of training tasks against evaluation tasks (n-gram overlap)."""

from __future__ import annotations

import json
from pathlib import Path

from agentlm.data.collect import collect, scripted_teacher
from agentlm.data.decontaminate import decontaminate, eval_task_texts, main, task_text
from agentlm.data.formats import Conversation, Turn, read_jsonl

AGENTBENCH = Path(__file__).resolve().parents[3] / "shared" / "agentbench"


def chat(id: str, question: str) -> Conversation:
    return Conversation(id, [Turn("user", question), Turn("assistant", "an answer")])


def test_the_task_is_the_turn_the_models_first_own_reply_answers():
    agent = Conversation(
        "t",
        [
            Turn("user", "instruction"),
            Turn("assistant", "Ok.", False),
            Turn("user", "the task"),
            Turn("assistant", "act", True),
            Turn("user", "observation"),
        ],
    )
    assert task_text(agent) == "the task"
    assert task_text(chat("c", "plain question")) == "plain question"


def test_overlapping_tasks_are_dropped_and_named(tmp_path):
    evals = [
        "How many floors does the Capitol Square building in Columbus Ohio have according to the table of skyscrapers?"
    ]
    train = [
        chat(
            "copy",
            "Tell me: how many floors does the Capitol Square building in Columbus Ohio have according to the table?",
        ),
        chat(
            "near", "How many floors does the Capitol Square building have?"
        ),  # shorter than 13 shared words
        chat(
            "other", "List every employee in the Sales department who joined after 2020 and their managers."
        ),
    ]
    kept, report = decontaminate(train, evals)
    assert [c.id for c in kept] == ["near", "other"] and list(report.dropped) == ["copy"]
    assert "Capitol Square" in report.dropped["copy"]
    kept, _ = decontaminate(train, evals, n=6)  # a stricter n catches the near copy too
    assert [c.id for c in kept] == ["other"]


def test_trajectories_collected_from_the_eval_set_are_all_caught(tmp_path):
    from agentlm.agent.envs.db import DBEnvironment

    env = DBEnvironment()
    tasks = env.load(AGENTBENCH / "dbbench_dev.jsonl")
    collect(env, tasks[:12], tmp_path / "t.jsonl", scripted_teacher, progress=False)
    collected = read_jsonl(tmp_path / "t.jsonl")
    (tmp_path / "chat.jsonl").write_text(
        json.dumps(chat("g", "Write a haiku about autumn leaves falling.").to_record()) + "\n"
    )
    train = tmp_path / "train.jsonl"
    train.write_text((tmp_path / "t.jsonl").read_text() + (tmp_path / "chat.jsonl").read_text())
    texts = eval_task_texts(AGENTBENCH / "dbbench_dev.jsonl") + eval_task_texts(AGENTBENCH / "os_dev.json")
    assert len(texts) == 60 + 26
    kept, report = decontaminate(read_jsonl(train), texts)
    assert [c.id for c in kept] == ["g"] and len(report.dropped) == len(collected) > 0
    main(
        [
            "--train",
            str(train),
            "--eval",
            str(AGENTBENCH / "dbbench_dev.jsonl"),
            "--out",
            str(tmp_path / "clean.jsonl"),
        ]
    )
    assert [c.id for c in read_jsonl(tmp_path / "clean.jsonl")] == ["g"]


def test_the_held_out_assistant_and_tool_call_sets_are_read_turn_by_turn(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps(
            {
                "id": "a",
                "turns": [{"question": "Who is Yara's manager?"}, {"question": "And when did they join?"}],
            }
        )
        + "\n"
    )
    calls = tmp_path / "t.jsonl"
    calls.write_text(
        json.dumps(
            {
                "id": "b",
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "Weather in Oslo?"},
                ],
            }
        )
        + "\n"
    )
    assert eval_task_texts(questions) == ["Who is Yara's manager?", "And when did they join?"]
    assert eval_task_texts(calls) == ["Weather in Oslo?"]

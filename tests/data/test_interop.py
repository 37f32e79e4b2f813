"""AgentInstruct loading and LLaMA-Factory sharegpt import/export (fixtures written here; nothing downloads)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentlm.agent.trajectory import ActionStep, FinalAnswerStep, ToolCall, Trajectory
from agentlm.data.formats import Conversation, DataFormatError, Turn
from agentlm.data.interop import from_llamafactory, load_agentinstruct, to_llamafactory


def record(i: int) -> dict:
    return {
        "id": f"os_{i}",
        "conversations": [
            {"from": "human", "loss": None, "value": "instruction"},
            {"from": "gpt", "loss": False, "value": "1-shot reply"},
            {"from": "human", "loss": None, "value": f"task {i}"},
            {"from": "gpt", "loss": True, "value": "Think: x\n\nAct: answer(1)"},
        ],
    }


def test_agentinstruct_from_a_directory_of_split_files_in_any_format(tmp_path):
    (tmp_path / "os.jsonl").write_text("\n".join(json.dumps(record(i)) for i in range(3)))
    (tmp_path / "db.json").write_text(json.dumps([record(9)]))
    pq.write_table(pa.Table.from_pylist([record(7), record(8)]), tmp_path / "alfworld-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text("not data")
    data = load_agentinstruct(tmp_path)
    assert {k: len(v) for k, v in data.items()} == {"os": 3, "db": 1, "alfworld": 2}
    assert [t.loss for t in data["os"][0].turns] == [None, False, None, True]  # the flags survive
    assert set(load_agentinstruct(tmp_path, splits=["db"])) == {"db"}
    with pytest.raises(DataFormatError, match="no 'train' split"):
        load_agentinstruct(tmp_path, splits=["train"])


def test_agentinstruct_errors_name_the_file_and_record(tmp_path):
    bad = record(1)
    bad["conversations"][3]["loss"] = "yes"
    (tmp_path / "os.jsonl").write_text(json.dumps(record(0)) + "\n" + json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"os.jsonl record 2: conversations\[3\].loss"):
        load_agentinstruct(tmp_path / "os.jsonl")
    with pytest.raises(DataFormatError, match="no such file"):
        load_agentinstruct(tmp_path / "missing")


def test_text_conversations_round_trip_through_llamafactory():
    conv = Conversation("c", [Turn("system", "Be brief."), Turn("user", "hi"), Turn("assistant", "hello")])
    record = to_llamafactory(conv)
    assert record == {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
        "system": "Be brief.",
    }
    back = from_llamafactory(record, "r")
    assert [(t.role, t.content) for t in back.turns] == [(t.role, t.content) for t in conv.turns]


def tool_trajectory() -> Trajectory:
    spec = {"type": "function", "function": {"name": "sql", "parameters": {"type": "object"}}}
    call = ToolCall("sql", json.dumps({"query": "SELECT 1"}), id="call_1")
    return Trajectory(
        task="How many?",
        profile="p",
        model="m",
        prompt=[{"role": "system", "content": "You are an HR assistant."}],
        protocol="tools",
        tools=[spec],
        steps=[ActionStep(0, "", "", call, "[(1,)]"), FinalAnswerStep(1, "One.", "One.", "One.")],
    )


def test_tool_calling_trajectories_export_with_function_call_and_observation_turns():
    record = to_llamafactory(tool_trajectory())
    assert [t["from"] for t in record["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert json.loads(record["conversations"][1]["value"]) == {
        "name": "sql",
        "arguments": {"query": "SELECT 1"},
    }
    assert json.loads(record["tools"])[0]["function"]["name"] == "sql"
    assert record["system"] == "You are an HR assistant."
    with pytest.raises(DataFormatError, match=r"conversations\[1\] is a function_call turn"):
        from_llamafactory(record, "r")
    as_text = from_llamafactory(record, "r", tool_turns="text")
    assert [t.role for t in as_text.turns] == ["system", "user", "assistant", "user", "assistant"]


def test_text_protocol_trajectories_export_as_their_training_conversation():
    traj = Trajectory(
        task="How many?",
        profile="hr",
        model="m",
        prompt=[{"role": "user", "content": "instruction"}, {"role": "assistant", "content": "Ok."}],
        steps=[FinalAnswerStep(0, "Action: Answer\nFinal Answer: 1", "", "1")],
    )
    record = to_llamafactory(traj)
    assert [t["from"] for t in record["conversations"]] == ["human", "gpt", "human", "gpt"]

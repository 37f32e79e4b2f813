import json
import re

import pytest

from agentlm.data.formats import Conversation, DataFormatError, Turn, read_jsonl, write_jsonl


def test_agentinstruct_record_round_trips(tmp_path):
    record = {
        "id": "db_1",
        "conversations": [
            {"from": "human", "loss": None, "value": "prompt"},
            {"from": "gpt", "loss": False, "value": "Ok."},
            {"from": "human", "loss": None, "value": "task"},
            {"from": "gpt", "loss": True, "value": "Action: Answer\nFinal Answer: [1]"},
        ],
    }
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (conv,) = read_jsonl(path)
    assert conv.turns[1] == Turn("assistant", "Ok.", False)
    assert not conv.turns[1].trainable() and conv.turns[1].trainable(honour_loss_flag=False)
    assert conv.turns[3].trainable()
    write_jsonl(tmp_path / "b.jsonl", [conv])
    assert json.loads((tmp_path / "b.jsonl").read_text()) == record


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not valid JSON"),
        ('{"id": 1}', "line 2: field 'conversations'"),
        ('{"conversations": [{"from": "bot", "value": "x"}]}', "conversations[0].from is 'bot'"),
        ('{"conversations": [{"from": "human", "value": 3}]}', "conversations[0].value must be a string"),
        ('{"conversations": [{"from": "gpt", "value": "x", "loss": "yes"}]}', "conversations[0].loss"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = Conversation("ok", [Turn("user", "hi")]).to_record()
    path.write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(DataFormatError, match=re.escape(message)) as err:
        read_jsonl(path)
    assert str(path) in str(err.value)


def test_other_record_fields_survive_reading_and_writing(tmp_path):
    """A collector's reward and repair counts pass through filtering and mixing unchanged."""
    record = {
        "id": "db-7",
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "loss": True, "value": "a"}],
        "source": "collect/db/scripted",
        "reward": 1.0,
        "repaired_steps": 2,
    }
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps(record) + "\n")
    write_jsonl(out, read_jsonl(src))
    again = json.loads(out.read_text())
    assert again["reward"] == 1.0 and again["repaired_steps"] == 2
    assert list(again)[:3] == ["id", "conversations", "source"]

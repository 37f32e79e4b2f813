"""The bundled trajectories are exactly what the database and the agent's prompt produce today."""

from agentlm.agent.actions import FinalAnswer, parse_db_reply
from agentlm.data.bundle import build_hr_trajectories, bundled_path
from agentlm.data.formats import read_jsonl
from agentlm.data.hr import build_hr_database


def test_bundled_file_matches_a_fresh_build(tmp_path):
    fresh = build_hr_trajectories(build_hr_database(tmp_path / "hr.duckdb"))
    bundled = read_jsonl(bundled_path("hr_trajectories.jsonl"))
    assert [c.to_record() for c in fresh] == [c.to_record() for c in bundled], (
        "data/bundled/hr_trajectories.jsonl is stale: run `python -m agentlm.data.bundle`"
    )


def test_bundled_trajectories_have_the_agentinstruct_shape():
    convs = read_jsonl(bundled_path("hr_trajectories.jsonl"))
    assert len(convs) >= 15
    questions = [c.turns[2].content for c in convs]
    assert "How many vacation days does Dana Kim have left?" in questions
    for conv in convs:
        assert conv.turns[1].content == "Ok." and conv.turns[1].loss is False
        assert isinstance(parse_db_reply(conv.turns[-1].content).action, FinalAnswer)
        assert all(t.loss is True for t in conv.turns[3:] if t.role == "assistant")


def test_general_chat_parses():
    convs = read_jsonl(bundled_path("general_chat.jsonl"))
    assert len(convs) >= 30 and all(c.source == "bundled/general" for c in convs)

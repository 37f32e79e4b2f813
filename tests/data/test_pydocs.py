"""General chat from Python's documentation: well-formed, deterministic, whole paragraphs."""

from agentlm.data import pydocs
from agentlm.data.formats import read_jsonl


def test_conversations_are_single_exchanges_of_documentation_prose(tmp_path):
    convs = pydocs.conversations()
    assert len(convs) > 500  # enough to mix with a few hundred trajectories at eta = 0.2
    assert len({c.id for c in convs}) == len(convs)
    for c in convs:
        assert [t.role for t in c.turns] == ["user", "assistant"] and c.source == pydocs.SOURCE
        assert c.turns[0].content.endswith("?") and len(c.turns[1].content) >= 80
    answers = {c.turns[0].content: c.turns[1].content for c in convs}
    assert answers['Can you explain the "for" statement in Python?'].startswith('The "for" statement is used')
    assert "json.dumps" in "".join(answers)


def test_limit_seed_and_paragraph_budget(tmp_path):
    first = pydocs.conversations(limit=50, seed=1, max_chars=300)
    assert len(first) == 50
    assert [c.turns for c in first] == [
        c.turns for c in pydocs.conversations(limit=50, seed=1, max_chars=300)
    ]
    assert [c.turns for c in first] != [
        c.turns for c in pydocs.conversations(limit=50, seed=2, max_chars=300)
    ]
    for c in first:  # whole paragraphs up to the budget; a single longer paragraph is kept whole
        answer = c.turns[1].content
        assert len(answer) <= 300 or "\n\n" not in answer


def test_command_line_writes_loadable_jsonl(tmp_path):
    out = tmp_path / "general.jsonl"
    pydocs.main(["--out", str(out), "--limit", "20"])
    convs = read_jsonl(out)
    assert len(convs) == 20 and all(c.source == pydocs.SOURCE for c in convs)

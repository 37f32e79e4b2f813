"""General chat preparation: ShareGPT loading, English filter, cleaning, splitting, 1:4 source sampling."""

from __future__ import annotations

import json

import pytest

from agentlm.data.formats import Conversation, DataFormatError, Turn, read_jsonl
from agentlm.data.general import load_sharegpt, main, prepare, sample_sources


def words(text: str) -> int:
    return len(text.split())


def sharegpt(turns, id="c"):
    return {"id": id, "conversations": [{"from": f, "value": v} for f, v in turns]}


EN = [("human", "How do I sort a list in Python?"), ("gpt", "Use sorted(items) or items.sort().")]
FR = [("human", "Comment trier une liste en Python, s'il vous plaît ?"), ("gpt", "Utilisez sorted().")]


def test_sharegpt_role_spellings_are_read_and_broken_records_counted(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            [
                sharegpt([("system", "Be brief."), ("user", "hi"), ("chatgpt", "hello")], "a"),
                sharegpt([("human", "hi"), ("robot", "beep")], "b"),
                {"id": "c", "messages": []},
            ]
        )
    )
    from agentlm.data.general import PrepareReport

    report = PrepareReport()
    (conv,) = load_sharegpt(path, report)
    assert [t.role for t in conv.turns] == ["system", "user", "assistant"] and conv.id == "a"
    assert report.read == 3
    assert report.dropped == {"unknown role or non-text turn": 1, "no 'conversations' list": 1}
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataFormatError, match="bad.jsonl"):
        load_sharegpt(tmp_path / "bad.jsonl")


def conv(turns, id="c") -> Conversation:
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    return Conversation(id, [Turn(role[f], v) for f, v in turns], source="test")


def test_only_english_conversations_are_kept():
    kept, report = prepare([conv(EN, "en"), conv(FR, "fr")], 100, words)
    assert [c.id for c in kept] == ["en"] and report.dropped == {"not English": 1}


def test_empty_turns_go_and_conversations_that_do_not_alternate_are_dropped():
    messy = conv([("human", "What is 2+2?"), ("gpt", "   "), ("gpt", "It is 4."), ("human", "thanks")], "m")
    broken = conv([("gpt", "Hello! How can I help?"), ("human", "What is the capital of France?")], "b")
    kept, report = prepare([messy, broken], 100, words)
    assert [(t.role, t.content) for t in kept[0].turns] == [
        ("user", "What is 2+2?"),
        ("assistant", "It is 4."),
    ]
    assert report.dropped == {"turns do not alternate user/assistant": 1}


def test_long_conversations_split_at_turn_boundaries_and_one_long_exchange_is_dropped():
    long = [("system", "You help with Python.")]
    for i in range(6):
        long += [
            ("human", f"Question number {i} about Python lists please"),
            ("gpt", "Answer " + "word " * 8),
        ]
    kept, report = prepare([conv(long, "long")], 40, words)
    assert len(kept) > 1 and report.split == 1
    for piece in kept:
        assert piece.turns[0].role == "system" and piece.turns[1].role == "user"
        assert sum(words(t.content) for t in piece.turns) <= 40
    # Every exchange survives, in order, none cut mid-turn.
    exchanges = [t.content for piece in kept for t in piece.turns[1:]]
    assert exchanges == [v.strip() for _, v in long[1:]]
    huge = conv([("human", "Please explain Python generators in detail"), ("gpt", "word " * 100)], "huge")
    kept, report = prepare([huge], 40, words)
    assert kept == [] and report.dropped == {"one exchange longer than 40 tokens": 1}


def test_sources_are_sampled_one_to_four_deterministically():
    g4 = [conv(EN, f"g4-{i}") for i in range(10)]
    g35 = [conv(EN, f"g35-{i}") for i in range(30)]
    mixed = sample_sources(g4, g35, (1, 4), seed=1)
    n4 = sum(c.id.startswith("g4-") for c in mixed)
    assert (n4, len(mixed) - n4) == (7, 28)  # GPT-3.5 runs out first: 28 = 4 x 7
    assert [c.id for c in mixed] == [c.id for c in sample_sources(g4, g35, (1, 4), seed=1)]
    assert [c.id for c in mixed] != [c.id for c in sample_sources(g4, g35, (1, 4), seed=2)]
    with pytest.raises(ValueError, match="two positive parts"):
        sample_sources(g4, g35, (0, 4))


def test_the_command_prepares_both_sources_and_writes_the_mix(tmp_path, capsys):
    (tmp_path / "g4.json").write_text(
        json.dumps([sharegpt(EN, f"a{i}") for i in range(3)] + [sharegpt(FR, "f")])
    )
    (tmp_path / "g35.jsonl").write_text("\n".join(json.dumps(sharegpt(EN, f"b{i}")) for i in range(8)))
    main(
        [
            "--gpt4",
            str(tmp_path / "g4.json"),
            "--gpt35",
            str(tmp_path / "g35.jsonl"),
            "--out",
            str(tmp_path / "o.jsonl"),
        ]
    )
    out = read_jsonl(tmp_path / "o.jsonl")
    assert sum(c.id.startswith("a") for c in out) == 2  # 2 units of 1:4 (8 GPT-3.5 conversations)
    assert len(out) == 10
    printed = capsys.readouterr().out
    assert "gpt4: 4 read, 3 out" in printed and "1 not English" in printed

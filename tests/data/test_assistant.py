"""The default model's training data: generated companies, assistant conversations, tool calls."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import duckdb
import jsonschema
import pytest

from agentlm.agent.actions import FinalAnswer, parse_db_reply
from agentlm.agent.databases import hr
from agentlm.agent.profiles import load_profile
from agentlm.agent.toolcalls import parse_tool_calls
from agentlm.agent.trajectory import ToolCall
from agentlm.data import worlds
from agentlm.data.assistant import build_examples
from agentlm.data.toolcalls import generate


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> worlds.World:
    return worlds.build_world(7, tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def examples(world: worlds.World):
    profiles = {p: load_profile(p) for p in ("hr-assistant", "scheduling-assistant")}
    return build_examples(world, 80, random.Random(0), profiles)


def test_a_world_shares_no_person_team_or_room_with_the_shipped_sample(world: worlds.World) -> None:
    sample = hr.company_rows(0)
    names = {(e[1], e[2]) for e in world.employees}
    assert not {e[1] for e in world.employees} & {e[1] for e in sample["employees"]}
    assert not {e[2] for e in world.employees} & {e[2] for e in sample["employees"]}
    assert not {d[1] for d in world.rows["departments"]} & {d[1] for d in sample["departments"]}
    assert not {r[1] for r in world.rows["rooms"]} & {r[1] for r in sample["rooms"]}
    assert len(names) == len(world.employees)  # no two people with one name
    with duckdb.connect(str(world.scheduling_db), read_only=True) as db:  # the shipped schema, macros too
        assert (
            db.execute(
                "SELECT count(*) FROM free_rooms('2026-01-05 09:00', '2026-01-05 10:00', 1)"
            ).fetchone()[0]
            > 0
        )
    assert worlds.world_rows(7) == world.rows  # deterministic for a seed


def test_every_conversation_opens_as_the_profile_does_and_every_reply_parses(world, examples) -> None:
    assert len(examples) == 80
    profiles = {
        p: load_profile(p).with_database(db)
        for p, db in (("hr-assistant", world.hr_db), ("scheduling-assistant", world.scheduling_db))
    }
    for conv in examples:
        profile = profiles[conv.extra["profile"]]
        messages = conv.messages()
        assert messages[:2] == profile.opening_messages()[:2]  # the instruction with the schema, "Ok."
        # Then one of the three worked examples nearest its questions, as the server shows them.
        bank = profile.exemplar_bank.exemplars
        shown = next(e for e in bank if messages[2 : 2 + len(e.messages)] == list(e.messages))
        rest = messages[2 + len(shown.messages) :]
        questions = [rest[0]["content"]] + ([rest[2]["content"]] if "+" in conv.source else [])
        assert shown in profile.exemplar_bank.ranked(questions, 3)
        own = [t for t in conv.turns if t.role == "assistant" and t.loss]
        assert own, conv.id
        *actions, answer = own
        assert all(isinstance(parse_db_reply(t.content).action, ToolCall) for t in actions)
        assert isinstance(parse_db_reply(answer.content).action, FinalAnswer)


def test_the_data_covers_follow_ups_refusals_and_writes(examples) -> None:
    kinds = {c.source.removeprefix("assistant/") for c in examples}
    assert any("+" in k for k in kinds)  # follow-ups
    assert {"unanswerable", "booking", "leave_request", "free_rooms", "policy"} <= {
        part for k in kinds for part in k.split("+")
    }
    for conv in examples:
        if "+" in conv.source:  # the earlier turn is context: its answer is not trained on
            earlier = [
                t for t in conv.turns if t.role == "assistant" and t.content.startswith("Action: Answer")
            ]
            assert earlier and all(t.loss is False for t in earlier)
        if conv.source == "assistant/unanswerable":
            assert not any("Action: Operation" in t.content for t in conv.turns[6:])
            assert "can't answer" in conv.turns[-1].content
        if conv.source == "assistant/booking" and "booked" in conv.turns[-1].content:
            assert any("INSERT INTO meetings" in t.content for t in conv.turns if t.loss)


def test_tool_calls_parse_to_offered_functions_with_arguments_valid_for_their_schema() -> None:
    examples = generate(150, seed=3)
    calls, spellings = 0, collections.defaultdict(set)
    for conv in examples:
        offered = {t["function"]["name"]: t["function"] for t in conv.extra["tools"]}
        assert all(f'"{name}"' in conv.turns[0].content for name in offered)  # described to the model
        for turn in conv.turns:
            if turn.role != "assistant" or "<tool_call>" not in turn.content:
                continue
            content, parsed = parse_tool_calls(turn.content)
            assert content == "" and parsed
            for call in parsed:
                name, args = call["function"]["name"], json.loads(call["function"]["arguments"])
                assert name in offered
                jsonschema.validate(args, offered[name]["parameters"])
                assert set(offered[name]["parameters"]["required"]) <= set(args)
                spellings[tuple(sorted(args))].add(name)
                calls += 1
        assert conv.turns[-1].role == "assistant" and "<tool_call>" not in conv.turns[-1].content
    assert calls > 150
    assert any("<tool_call>" not in t.content for c in examples for t in c.turns[2:3])  # some need no call
    # The same concept comes under several names and parameter names, so the schema must be read.
    leave = [names for keys, names in spellings.items() if any("type" in k or k == "reason" for k in keys)]
    assert len(leave) > 3 and len(set().union(*leave)) > 3


def test_tool_call_requests_are_worded_as_people_write_and_answered_in_the_declared_format() -> None:
    examples = generate(400, seed=4)
    requests = [c.turns[1].content for c in examples]
    assert any(r == r.lower() and any(ch.isalpha() for ch in r) for r in requests)  # typed in lower case
    assert any("pm" in r for r in requests)  # times on the 12-hour clock ...
    times = [
        v
        for c in examples
        for t in c.turns
        if t.role == "assistant" and "<tool_call>" in t.content
        for call in parse_tool_calls(t.content)[1]
        for v in json.loads(call["function"]["arguments"]).values()
        if isinstance(v, str) and v.startswith("2026-") and " " in v
    ]
    assert times and all(len(v) == 16 and v[13] == ":" for v in times)  # ... become 'YYYY-MM-DD HH:MM'
    kinds = [sum("<tool_call>" in t.content for t in c.turns if t.role == "assistant") for c in examples]
    assert kinds.count(0) > 40 and sum(k >= 2 for k in kinds) > 60  # no call, and chained or follow-up calls


def test_the_data_commands_write_their_files(tmp_path: Path) -> None:
    from agentlm.data import assistant, toolcalls

    assistant.main(["--out", str(tmp_path / "a.jsonl"), "--worlds", "1", "--per-world", "5"])
    toolcalls.main(["--out", str(tmp_path / "t.jsonl"), "--examples", "5"])
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 5
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 5


def test_a_bank_leaves_out_what_overlaps_an_evaluation_set_and_what_one_company_lacks(tmp_path: Path) -> None:
    from agentlm.agent.exemplars import ExemplarBank
    from agentlm.data.assistant import BANK_SKIP, generate_bank
    from agentlm.data.decontaminate import EvalIndex

    banks = generate_bank(1, 60, tmp_path / "all")
    records = [r for bank in banks.values() for r in bank]
    assert records and not any(BANK_SKIP & set(r["kind"].split("+")) for r in records)
    held_out = records[0]["messages"][0]["content"]  # pretend an evaluation set asks this
    again = generate_bank(1, 60, tmp_path / "clean", EvalIndex([held_out]))
    kept = [r for bank in again.values() for r in bank]
    assert len(kept) < len(records) and held_out not in {r["messages"][0]["content"] for r in kept}
    for profile, bank in again.items():  # each loads as the profile would load it
        path = tmp_path / f"{profile}.exemplars.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in bank))
        assert len(ExemplarBank.load(path).exemplars) == len(bank)


def test_fixed_one_shot_data_all_open_with_the_profiles_own_example(tmp_path: Path) -> None:
    from agentlm.data.assistant import generate

    conversations = generate(1, 12, seed=5, folder=tmp_path, one_shot="fixed")
    assert conversations
    for conv in conversations:
        one_shot = load_profile(conv.extra["profile"]).one_shot
        assert conv.messages()[2 : 2 + len(one_shot)] == one_shot
    with pytest.raises(ValueError, match="'nearest' or 'fixed'"):
        generate(1, 1, seed=5, folder=tmp_path, one_shot="random")

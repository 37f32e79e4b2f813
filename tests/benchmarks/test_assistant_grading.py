"""The held-out assistant benchmark's grader and question files (benchmarks/assistant.py, benchmarks/heldout/).

No model and no server: the grader on hand-made answers, the files' shape and counts, and that the
questions file is what its generator writes from the sample databases.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = ROOT / "benchmarks" / "heldout"
EXPECT_KEYS = {"all", "any", "none", "refusal", "pending_write"}


bench = load_benchmark("assistant")


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (HELDOUT / name).read_text().splitlines() if line.strip()]


QUESTIONS = _jsonl("assistant_questions.jsonl")
TOOL_CALLS = _jsonl("tool_calls.jsonl")


# --- the grader ----------------------------------------------------------------------------------
def test_right_answer_passes_and_wrong_number_fails() -> None:
    expect = {"all": ["12", "Cedar"]}
    assert bench.grade("Cedar has 12 seats.", expect)
    assert bench.grade("cedar: 12.0 seats", expect)
    assert not bench.grade("Cedar has 13 seats.", expect)
    assert not bench.grade("There are 12 seats.", expect)


def test_numbers_match_as_whole_numbers() -> None:
    assert not bench.grade("Yara has 120 days left.", {"all": ["12"]})
    assert not bench.grade("On 2026-12-09 at 12:30.", {"all": ["12"]})
    assert bench.grade("Yara has 12.", {"all": ["12"]})
    assert bench.grade("She has five days left.", {"all": ["5"]})
    assert bench.grade("About 3.58 days on average.", {"all": ["3.6"]})
    assert not bench.grade("About 3.5 days on average.", {"all": ["3.6"]})
    assert not bench.grade("12.4 days", {"all": ["12"]})


def test_words_match_whole_words_case_insensitively() -> None:
    assert bench.grade("It is mia garcia.", {"all": ["Mia Garcia"]})
    assert not bench.grade("The office in Miami.", {"all": ["Mia"]})
    assert bench.grade("Born May 10, 2015.", {"all": [["2015-05-10", "May 10, 2015"]]})


def test_any_and_none() -> None:
    expect = {"any": ["busy", "Hiring panel"], "none": ["not busy", "is free"]}
    assert bench.grade("Yes, she has the Hiring panel then.", expect)
    assert not bench.grade("No, she is not busy.", expect)
    assert not bench.grade("She is free.", expect)


def test_refusal() -> None:
    question = "What is Grace Tanaka's salary?"
    assert bench.grade("I don't have salary data for Grace Tanaka.", {"refusal": True}, question=question)
    assert bench.grade("The database doesn’t record salaries.", {"refusal": True}, question=question)
    assert not bench.grade("I can't be sure, but it is 65000 a year.", {"refusal": True}, question=question)
    assert not bench.grade("Grace Tanaka earns well.", {"refusal": True}, question=question)
    # numbers from the question are not invented ones
    assert bench.grade(
        "There is no room called Everest on 2026-12-09.",
        {"refusal": True},
        question="Is the Everest room free on 2026-12-09 at 10:00?",
    )


def test_pending_write() -> None:
    expect = {
        "pending_write": {
            "all": ["INSERT INTO meetings", "2026-12-09 15:00", "2026-12-09 16:00"],
            "any": ["6", "Fjord"],
        }
    }
    booked = [
        "INSERT INTO meetings VALUES (91, 'Vendor demo', 6, 5, '2026-12-09 15:00:00', '2026-12-09 16:00:00')",
        "INSERT INTO meeting_attendees VALUES (91, 5)",
    ]
    assert bench.grade("Booked Fjord.", expect, booked)
    assert bench.grade(
        "Booked.",
        expect,
        ["insert  into meetings SELECT 91, 'x', 6, 5, '2026-12-09 15:00', '2026-12-09 16:00'"],
    )
    assert not bench.grade("Booked Fjord for you.", expect, [])
    assert not bench.grade("Booked.", expect, [booked[0].replace("15:00", "14:00")])
    assert not bench.grade("Booked.", expect, [booked[0].replace(", 6, 5,", ", 7, 5,")])
    assert not bench.grade("Booked.", expect, booked[1:])


def test_tool_calls_match_as_a_multiset_after_normalising() -> None:
    tools = [item for item in TOOL_CALLS if item["id"] == "tc-two-balances"][0]["tools"]
    expected = [
        {"name": "get_leave_balance", "arguments": {"name": "Yara Novak", "leave_type": "vacation"}},
        {"name": "get_leave_balance", "arguments": {"name": "Mateo Costa", "leave_type": "vacation"}},
    ]
    swapped = [
        {"name": "get_leave_balance", "arguments": {"name": " mateo costa", "leave_type": "Vacation"}},
        {
            "name": "get_leave_balance",
            "arguments": {"name": "Yara Novak", "leave_type": "vacation", "year": 2026},
        },
    ]
    assert bench.calls_match(swapped, expected, tools)  # order-free; year is the schema's default
    assert not bench.calls_match(swapped[:1], expected, tools)
    assert not bench.calls_match([*swapped, swapped[0]], expected, tools)
    other_year = [swapped[0], {**swapped[1], "arguments": {**swapped[1]["arguments"], "year": 2025}}]
    assert not bench.calls_match(other_year, expected, tools)
    assert not bench.calls_match(
        [swapped[0], {"name": "get_leave_balance", "arguments": None}], expected, tools
    )
    assert bench.calls_match([], [], tools)
    assert not bench.calls_match(swapped, [], tools)


def test_tool_call_arguments_parse() -> None:
    assert bench._parse_arguments('{"city": "Lisbon"}') == {"city": "Lisbon"}
    assert bench._parse_arguments('["Lisbon"]') is None
    assert bench._parse_arguments("city=Lisbon") is None


def test_figures_and_ratios() -> None:
    turns = [
        bench.TurnResult("a", "hr-assistant", "lookup", 0, 1, "q", {"all": ["x"]}, seconds=1.0, correct=True),
        bench.TurnResult("b", "scheduling-assistant", "follow_up", 0, 2, "q", {"all": ["x"]}, seconds=3.0),
        bench.TurnResult("b", "scheduling-assistant", "follow_up", 1, 2, "q", {"refusal": True}, seconds=2.0),
    ]
    fig = bench.figures(turns, [], "m", 1000.0)
    assert fig["accuracy"] == pytest.approx(1 / 3)
    assert fig["by_kind"]["hr"] == 1.0 and fig["by_kind"]["follow_up"] == 0.0
    assert fig["by_kind"]["unanswerable"] == 0.0 and fig["by_kind"]["booking"] is None
    assert fig["p50_s"] == 2.0 and fig["p95_s"] == pytest.approx(2.9)
    assert len(fig["failures"]) == 2 and fig["tool_call_accuracy"] is None
    ratios = bench.ratios(fig)
    assert ratios["p50_s"] == pytest.approx(7.5) and ratios["peak_rss_mb"] == pytest.approx(2.5)
    assert ratios["accuracy"] == pytest.approx(1 / 3 / 0.85) and ratios["tool_call_accuracy"] is None


def test_peak_rss_samples_this_process() -> None:
    with bench.PeakRSS(os.getpid(), interval=0.05) as rss:
        time.sleep(0.2)
    assert rss.peak_mb > 10


# --- the files -------------------------------------------------------------------------------------
def test_question_file_is_valid() -> None:
    profiles = {p.stem for p in (ROOT / "agent" / "profiles").glob("*.yaml")}
    ids = [q["id"] for q in QUESTIONS]
    assert len(ids) == len(set(ids)) >= 64
    for q in QUESTIONS:
        assert q["profile"] in profiles and q["profile"] in bench.PROFILES, q["id"]
        assert 1 <= len(q["turns"]) <= 2, q["id"]
        for turn in q["turns"]:
            assert turn["question"].strip(), q["id"]
            assert turn["expect"] and set(turn["expect"]) <= EXPECT_KEYS, q["id"]
    turns = [t for q in QUESTIONS for t in q["turns"]]
    assert sum(len(q["turns"]) == 2 for q in QUESTIONS) >= 10
    assert sum(bool(t["expect"].get("refusal")) for t in turns) >= 5
    bookings = [t for q in QUESTIONS if q["profile"] == "scheduling-assistant" for t in q["turns"]]
    assert sum("pending_write" in t["expect"] for t in bookings) >= 3
    assert sum(q["category"] == "leave_request" for q in QUESTIONS) >= 2
    hr = sum(q["profile"] == "hr-assistant" for q in QUESTIONS) / len(QUESTIONS)
    assert 0.5 <= hr <= 0.7


def test_tool_call_file_is_valid() -> None:
    ids = [item["id"] for item in TOOL_CALLS]
    assert len(ids) == len(set(ids)) >= 32
    for item in TOOL_CALLS:
        functions = {t["function"]["name"]: t["function"]["parameters"] for t in item["tools"]}
        assert item["messages"] and item["messages"][-1]["role"] in {"user", "tool"}, item["id"]
        for call in item["expect"]:
            schema = functions[call["name"]]
            assert set(schema["required"]) <= set(call["arguments"]) <= set(schema["properties"]), item["id"]
            for key, value in call["arguments"].items():
                assert value in schema["properties"][key].get("enum", [value]), item["id"]
    # two calls: both in one reply, or the second after the first one's result
    second = [
        item for item in TOOL_CALLS if any(m.get("tool_calls") for m in item["messages"]) and item["expect"]
    ]
    assert sum(len(item["expect"]) == 2 for item in TOOL_CALLS) + len(second) >= 8
    assert sum(not item["expect"] for item in TOOL_CALLS) >= 4
    assert len({t["function"]["name"] for item in TOOL_CALLS for t in item["tools"]}) >= 6


def test_question_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    make = load_benchmark("heldout/make_assistant_questions")
    make.main(["--out-dir", str(tmp_path)])
    for name in ("assistant_questions.jsonl", "tool_calls.jsonl"):
        assert (tmp_path / name).read_text() == (HELDOUT / name).read_text(), name

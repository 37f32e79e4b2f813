"""Exemplar banks: each run's 1-shot is the worked example most like its conversation."""

import json
from pathlib import Path

import pytest

from agentlm.agent.actions import FinalAnswer, parse_db_reply
from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.exemplars import ExemplarBank, ExemplarError
from agentlm.agent.profiles import ProfileError, load_profile
from agentlm.data.decontaminate import EvalIndex, eval_task_texts

HELDOUT = Path(__file__).resolve().parents[2] / "benchmarks" / "heldout"


def shot(question: str, sql: str, rows: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": f"Querying.\nAction: Operation\n```sql\n{sql}\n```"},
        {"role": "user", "content": rows},
        {"role": "assistant", "content": f"Done.\nAction: Answer\nFinal Answer: {answer}"},
    ]


def write_bank(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def bank(tmp_path):
    leave = shot("How many vacation days does Ana Berg have left?", "SELECT 3;", "[(3,)]", "3 days.")
    manager = shot("Who is Ana Berg's manager?", "SELECT 'Li';", "[('Li',)]", "Li.")
    rooms = shot(
        "Which rooms are free on 2027-01-04 from 10:00 to 11:00?", "SELECT 'Oak';", "[('Oak',)]", "Oak."
    )
    follow = [
        {"role": "user", "content": "Who is Ana Berg's manager?"},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: Li."},
        *shot("And when did that person join?", "SELECT 1;", "[(1,)]", "In 2020."),
    ]
    return write_bank(
        tmp_path / "bank.jsonl",
        [
            {"kind": "leave_left", "query": leave[0]["content"], "messages": leave},
            {"kind": "manager", "query": manager[0]["content"], "messages": manager},
            {"kind": "free_rooms", "query": rooms[0]["content"], "messages": rooms},
            {
                "kind": "manager+hired",
                "query": "Who is Ana Berg's manager? And when did that person join?",
                "messages": follow,
            },
        ],
    )


def test_the_nearest_example_is_the_same_kind_of_question_in_other_words(bank):
    b = ExemplarBank.load(bank)
    assert b.nearest(["how many vacation days has Priya Patel got left"]).kind == "leave_left"
    assert b.nearest(["Who's Omar Khan's manager?"]).kind == "manager"
    assert b.nearest(["is any room free on 2026-12-08 between 14:00 and 15:00"]).kind == "free_rooms"
    assert [e.kind for e in b.ranked(["Who is Omar Khan's manager?"], 2)] == ["manager", "manager+hired"]


def test_a_follow_up_is_matched_with_its_earlier_question(bank):
    b = ExemplarBank.load(bank)
    assert b.nearest(["Who manages Omar Khan?", "when did they join?"]).kind == "manager+hired"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 1: not an exemplar"),
        ('{"messages": []}', "line 1: not an exemplar .*'query'"),
        ('{"query": "q", "messages": [{"role": "assistant", "content": "a"}]}', "starting with the user"),
        (
            '{"query": "q", "messages": [{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}]}',
            "alternate",
        ),
    ],
)
def test_a_broken_bank_names_its_line_and_what_each_line_needs(tmp_path, line, message):
    path = tmp_path / "bank.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ExemplarError, match=message):
        ExemplarBank.load(path)


def test_an_empty_bank_is_refused(tmp_path):
    with pytest.raises(ExemplarError, match="at least one"):
        ExemplarBank.load(write_bank(tmp_path / "bank.jsonl", []))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_hr_database(tmp_path_factory.mktemp("exemplars") / "hr.duckdb")


def test_a_profile_with_a_bank_opens_with_the_nearest_example_and_falls_back_to_its_one_shot(db, bank):
    base = load_profile("hr-assistant").with_database(db)
    profile = base.model_validate({**base.model_dump(), "exemplars": str(bank)})
    try:
        question = "How many vacation days does Yara Novak have left?"
        opening = profile.opening_messages([question])
        assert opening[2:] == list(profile.exemplar_bank.nearest([question]).messages)
        assert opening[2]["content"] == "How many vacation days does Ana Berg have left?"
        assert profile.opening_messages()[2:] == profile.one_shot  # no question: the fixed example
        # A run's setup shows the example for its conversation, earlier questions included.
        setup = profile.setup("when did they join?", history=[
            {"role": "user", "content": "Who manages Omar Khan?"}, {"role": "assistant", "content": "Li."},
        ])  # fmt: skip
        assert setup.prompt[2]["content"] == "Who is Ana Berg's manager?" and len(setup.prompt) == 2 + 6
    finally:
        profile.sql_tool.close()
        base.sql_tool.close()


def test_a_profile_naming_a_missing_bank_says_how_to_build_one(db, tmp_path):
    base = load_profile("hr-assistant").with_database(db)
    profile = base.model_validate({**base.model_dump(), "exemplars": str(tmp_path / "none.jsonl")})
    with pytest.raises(ProfileError, match="agentlm data assistant --bank"):
        profile.opening_messages(["How many people work here?"])
    base.sql_tool.close()


@pytest.mark.parametrize("name", ["hr-assistant", "scheduling-assistant"])
def test_shipped_banks_parse_answer_and_stay_clear_of_every_evaluation_set(name):
    profile = load_profile(name)
    bank = profile.exemplar_bank
    assert bank is not None and len(bank.exemplars) >= 100
    kinds = {e.kind.split("+")[0] for e in bank.exemplars}
    assert len(kinds) >= 15  # the bank covers the question kinds, not a few
    assert not kinds & {"unknown_person", "unknown_room", "policy_missing"}
    evals = EvalIndex(
        [
            t
            for path in (HELDOUT / "assistant_questions.jsonl", HELDOUT / "tool_calls.jsonl")
            for t in eval_task_texts(path)
        ]
    )
    for e in bank.exemplars:
        assert all(evals.hit(m["content"]) is None for m in e.messages if m["role"] == "user"), e.query
        # The last reply is an answer in the database protocol, as the model must write it.
        assert isinstance(parse_db_reply(e.messages[-1]["content"], repair=False).action, FinalAnswer)

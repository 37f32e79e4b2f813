import pytest

from agentlm.agent.actions import (
    REPAIR_MIN_BLEU,
    FinalAnswer,
    InvalidAction,
    closest_action,
    parse_db_reply,
    parse_os_reply,
)
from agentlm.agent.trajectory import ToolCall


def test_operation_takes_the_first_sql_block_with_newlines_as_spaces():
    reply = "I need the count.\nAction: Operation\n```sql\nSELECT count(*)\nFROM employees;\n```\n```sql\nDROP TABLE x;\n```"
    parsed = parse_db_reply(reply)
    assert parsed.thought == "I need the count."
    assert parsed.action == ToolCall("sql", "SELECT count(*) FROM employees;")


def test_answer_keeps_the_whole_final_answer():
    parsed = parse_db_reply('Done.\nAction: Answer\nFinal Answer: ["18"]')
    assert parsed.action == FinalAnswer('["18"]')
    assert parsed.thought == "Done."


def test_free_text_answer_spanning_lines():
    parsed = parse_db_reply("Action: Answer\nFinal Answer: Dana Kim has 18 days.\nEnjoy!")
    assert parsed.action == FinalAnswer("Dana Kim has 18 days.\nEnjoy!")


def test_reply_without_action_is_invalid_with_a_hint():
    parsed = parse_db_reply("I think the answer is 18.")
    assert isinstance(parsed.action, InvalidAction)
    assert "Action: Operation" in parsed.action.hint and "Final Answer" in parsed.action.hint


def test_operation_without_sql_block_and_unknown_action_are_invalid():
    assert isinstance(parse_db_reply("Action: Operation\nSELECT 1").action, InvalidAction)
    assert "Unknown action 'Dance'" in parse_db_reply("Action: Dance\n").action.hint
    assert isinstance(parse_db_reply("Action: Answer\nIt is 18").action, InvalidAction)


def test_keywords_are_case_insensitive_and_thoughts_may_span_lines():
    parsed = parse_db_reply("First I look.\nThen I count.\naction: operation\n```SQL\nSELECT 1;\n```")
    assert parsed.thought == "First I look.\nThen I count."
    assert parsed.action == ToolCall("sql", "SELECT 1;")


def test_empty_sql_block_is_invalid():
    assert isinstance(parse_db_reply("Action: Operation\n```sql\n\n```").action, InvalidAction)


def test_the_first_action_line_decides():
    parsed = parse_db_reply("Action: Answer\nFinal Answer: 3\nAction: Operation\n```sql\nSELECT 1;\n```")
    assert isinstance(parsed.action, FinalAnswer) and parsed.action.text.startswith("3")


# --- AgentBench OS protocol ----------------------------------------------------------------------


def test_os_bash_joins_every_bash_block_and_keeps_the_thought():
    reply = "Think: list then count.\n\nAct: bash\n\n```bash\nls /etc\n```\nand\n```bash\nwc -l x\n```"
    parsed = parse_os_reply(reply)
    assert parsed.thought == "list then count."
    assert parsed.action == ToolCall("bash", "ls /etc\n\nwc -l x")


def test_os_answer_is_between_the_first_and_last_parenthesis_of_its_line():
    parsed = parse_os_reply("Think: done.\n\nAct: answer(f(x) = (1))\nthanks (really)")
    assert parsed.action == FinalAnswer("f(x) = (1)")


def test_os_last_act_wins_and_an_answer_without_parentheses_is_skipped():
    reply = "Think: a\nAct: bash\n\n```bash\nls\n```\nThink: b\nAct: answer(220)"
    assert parse_os_reply(reply).action == FinalAnswer("220")
    reply = "Think: a\nAct: bash\n\n```bash\nls\n```\nAct: answer 220"
    assert parse_os_reply(reply).action == ToolCall("bash", "ls")


def test_os_finish_commits_without_an_answer():
    assert parse_os_reply("Think: all set.\n\nAct: finish").action == FinalAnswer(None)


def test_os_bash_without_a_block_and_no_act_are_invalid_with_the_os_hint():
    no_block = parse_os_reply("Think: x\n\nAct: bash\nls")
    assert isinstance(no_block.action, InvalidAction) and "```bash" in no_block.action.hint
    free_text = parse_os_reply("I would run ls.")
    assert isinstance(free_text.action, InvalidAction) and "Act: answer(" in free_text.action.hint


# --- BLEU repair of malformed action lines -------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "parse", "expected", "original", "repaired"),
    [
        (
            "Think: x\nAct: bsh\n\n```bash\nls\n```",
            parse_os_reply,
            ToolCall("bash", "ls"),
            "Act: bsh",
            "Act: bash",
        ),
        (
            "Think: x\nAct: anwser(18)",
            parse_os_reply,
            FinalAnswer("18"),
            "Act: anwser(18)",
            "Act: answer(18)",
        ),
        ("Think: x\nAkt: finish", parse_os_reply, FinalAnswer(None), "Akt: finish", "Act: finish"),
        (
            "Look.\nActoin: Operation\n```sql\nSELECT 1;\n```",
            parse_db_reply,
            ToolCall("sql", "SELECT 1;"),
            "Actoin: Operation",
            "Action: Operation",
        ),
        (
            "Action: Answr\nFinal Answer: 3",
            parse_db_reply,
            FinalAnswer("3"),
            "Action: Answr",
            "Action: Answer",
        ),
    ],
)
def test_a_near_miss_is_repaired_to_the_closest_action_and_recorded(
    reply, parse, expected, original, repaired
):
    parsed = parse(reply)
    assert parsed.action == expected
    assert parsed.repair is not None
    assert (parsed.repair.original, parsed.repair.repaired) == (original, repaired)
    assert parsed.repair.bleu >= REPAIR_MIN_BLEU
    # Without repair the same reply is invalid: the repair is what made it an action.
    assert isinstance(parse(reply, repair=False).action, InvalidAction)


@pytest.mark.parametrize(
    ("reply", "parse"),
    [
        ("The answer is 18.", parse_db_reply),
        ("Note: nothing to do here", parse_db_reply),
        ("Think: x\nResult: unknown", parse_os_reply),
        ("Think: x\nAct: dance", parse_os_reply),
    ],
)
def test_replies_far_from_any_action_stay_invalid(reply, parse):
    parsed = parse(reply)
    assert isinstance(parsed.action, InvalidAction) and parsed.repair is None


def test_a_valid_reply_is_never_marked_repaired():
    assert parse_db_reply("Action: Answer\nFinal Answer: 1").repair is None
    assert parse_os_reply("Think: x\nAct: finish").repair is None


def test_closest_action_ranks_by_bleu_like_agenttuning():
    valid = ["go to cabinet 1", "go to countertop 2", "take apple 1 from countertop 2"]
    action, score, runner_up = closest_action("go to the countertop 2", valid)
    assert action == "go to countertop 2" and score > runner_up
    with pytest.raises(ValueError):
        closest_action("x", [])

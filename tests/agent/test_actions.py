from agentlm.agent.actions import FinalAnswer, InvalidAction, parse_db_reply
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

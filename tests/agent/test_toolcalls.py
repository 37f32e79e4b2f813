"""Reading tool calls back out of replies written in the ``agent/toolcalls.py`` format."""

from __future__ import annotations

import json

import pytest

from agentlm.agent.toolcalls import (
    CALL_SEPARATOR,
    CALL_SUFFIX,
    ToolCallStream,
    call_prefix,
    format_tool_calls,
    parse_tool_calls,
)

CALLS = [{"name": "weather", "arguments": {"city": "Zürich", "days": 2}}, {"name": "clock", "arguments": {}}]
REPLY = format_tool_calls("Checking both.", CALLS)


def named(calls: list[dict]) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def test_blocks_become_calls_with_ids_and_the_rest_is_content() -> None:
    content, calls = parse_tool_calls(REPLY)
    assert content == "Checking both."
    assert named(calls) == [(c["name"], c["arguments"]) for c in CALLS]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == 2
    assert calls[0]["function"]["arguments"] == '{"city": "Zürich", "days": 2}'  # as json.dumps writes it
    assert parse_tool_calls(format_tool_calls("", CALLS[:1]))[0] == ""


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "weather", "arguments": {"city": "Oslo"}',  # cut short
        "not json at all",
        '["weather", {}]',  # not an object
        '{"name": 7, "arguments": {}}',
        '{"name": "weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}',  # arguments as a string
        '{"name": "weather"}',
    ],
)
def test_a_malformed_block_stays_text(body: str) -> None:
    good = format_tool_calls("", CALLS[1:])
    reply = f"Hm.\n<tool_call>\n{body}\n</tool_call>\n{good}"
    content, calls = parse_tool_calls(reply)
    assert content == f"Hm.\n<tool_call>\n{body}\n</tool_call>" and named(calls) == [("clock", {})]


def test_plain_text_and_an_unfinished_block_are_content() -> None:
    assert parse_tool_calls("Just an answer <tool_ca.") == ("Just an answer <tool_ca.", [])
    unfinished = '<tool_call>\n{"name": "clock", "arg'
    assert parse_tool_calls(f"Wait. {unfinished}") == (f"Wait. {unfinished}", [])


def test_streaming_holds_back_only_what_may_be_a_block() -> None:
    stream = ToolCallStream()
    pieces = [stream.push(ch) for ch in REPLY]
    content = [text for text, _ in pieces]
    # The content streamed as it came, before any block was complete.
    assert "".join(content[: REPLY.index("<tool_call>")]) == "Checking both."
    done = [i for i, (_, calls) in enumerate(pieces) if calls]
    assert [REPLY[: i + 1].endswith("</tool_call>") for i in done] == [True, True]
    assert stream.finish() == ("", [])
    assert named(stream.calls) == named(parse_tool_calls(REPLY)[1])

    stream = ToolCallStream()
    assert stream.push("a <tool_") == ("a", [])  # may be a block: held
    assert stream.push("box> b") == (" <tool_box> b", [])  # was not
    assert stream.finish() == ("", [])


def test_the_grammar_pieces_write_what_format_tool_calls_writes() -> None:
    args = json.dumps(CALLS[0]["arguments"], ensure_ascii=False)
    block = call_prefix("weather") + args + CALL_SUFFIX
    assert format_tool_calls("", CALLS) == block + CALL_SEPARATOR + format_tool_calls("", CALLS[1:])

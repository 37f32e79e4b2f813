"""OpenAI tool calling on the embedded engine: rendering, constrained decoding, streamed calls, 400s.

The tiny model is random, so it calls tools only because the grammar leaves it nothing else to
write: with tool_choice "required" or a named function its reply must be tool-call blocks whose
arguments match the schema, which the tests check with jsonschema. Requests go through the real
server on 127.0.0.1 with the official openai client.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import openai
import pytest
from openai import OpenAI

from agentlm.agent.toolcalls import format_tool_calls
from agentlm.data.templates import get_template
from agentlm.serve.engines import GenerationRequest, InvalidToolSchemaError, UnsupportedFeatureError
from agentlm.serve.engines.chat import chat_prompt
from agentlm.serve.engines.embedded import EmbeddedEngine

ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["C", "F"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "alerts": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
    },
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "description": "The forecast", "parameters": ARGS},
}
CLOCK = {"type": "function", "function": {"name": "clock", "description": "The time now"}}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]
NAMED = {"type": "function", "function": {"name": "weather"}}


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.v1, api_key="EMPTY", max_retries=0)


def chat(client: OpenAI, server, **kw):
    body = {"model": server.model_id, "messages": ASK, "tools": [WEATHER, CLOCK], "max_tokens": 120, **kw}
    return client.chat.completions.create(**body)


def check_calls(calls) -> None:
    """Every call is well formed and its arguments match its tool's schema."""
    schemas = {"weather": ARGS, "clock": {"type": "object"}}
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_") and len(call.id) > 10
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


@pytest.mark.parametrize("tool_choice", ["required", NAMED])
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "seed": 7}])
def test_a_forced_choice_makes_an_untrained_model_call_with_valid_arguments(
    client, server, tool_choice, sampling
) -> None:
    reply = chat(client, server, tool_choice=tool_choice, parallel_tool_calls=False, **sampling)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    if tool_choice == NAMED:
        assert call.function.name == "weather"
    check_calls([call])


def test_parallel_calls_are_each_valid_and_false_means_one(client, server) -> None:
    reply = chat(client, server, tool_choice="required", temperature=1.0, seed=3, max_tokens=200)
    calls = reply.choices[0].message.tool_calls
    assert calls and len({c.id for c in calls}) == len(calls)
    check_calls(calls)
    one = chat(client, server, tool_choice="required", temperature=1.0, seed=3, parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls) == 1


def test_tool_choice_none_offers_no_tools_and_reads_no_calls(client, server) -> None:
    offered = chat(client, server, tool_choice="auto", temperature=0, max_tokens=4)
    none = chat(client, server, tool_choice="none", temperature=0, max_tokens=16)
    assert none.usage.prompt_tokens < offered.usage.prompt_tokens  # the preamble is not in the prompt
    choice = none.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")


def test_auto_streams_plain_text_as_content(client, server) -> None:
    whole = chat(client, server, tool_choice="auto", temperature=0, max_tokens=24)
    chunks = list(chat(client, server, tool_choice="auto", temperature=0, max_tokens=24, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(chunks) > 3
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_streamed_tool_calls_arrive_as_openai_deltas(client, server) -> None:
    whole = chat(client, server, tool_choice="required", temperature=0, parallel_tool_calls=False)
    stream = chat(
        client,
        server,
        tool_choice="required",
        temperature=0,
        parallel_tool_calls=False,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    (delta,) = deltas
    (call,) = whole.choices[0].message.tool_calls
    assert delta.index == 0 and delta.id.startswith("call_") and delta.type == "function"
    assert (delta.function.name, delta.function.arguments) == (call.function.name, call.function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_conversation_with_tool_results_is_answered(client, server) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    }
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    reply = chat(client, server, messages=messages, tool_choice="required", parallel_tool_calls=False)
    check_calls(reply.choices[0].message.tool_calls)


# --- bad requests: a clear 400 naming the field ---------------------------------------------------

BROKEN = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "strange"}}},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"tools": [WEATHER, BROKEN]}, "tools", "tool 'lookup': its parameters schema cannot be used"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "tools",
            "tool 'f': parameters must be a JSON schema of type 'object'",
        ),
        (
            {"messages": [*ASK, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
            "messages.2.tool_call_id",
            "'call_9', which no earlier assistant message's tool_calls has",
        ),
        (
            {"messages": [*ASK, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "weather", "arguments": "{oops"}}]}]},
            "messages.1.tool_calls.0.function.arguments",
            "must be a JSON object",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "not among the tools"),
        ({"messages": [{"role": "user", "content": "word " * 5000}]}, "messages", "context window"),
    ],
)  # fmt: skip
def test_bad_tool_requests_are_400_naming_the_field(client, server, body, param, words) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, server, **body)
    assert e.value.status_code == 400
    assert e.value.body["param"] == param and words in e.value.body["message"], e.value.body
    if "context window" in words:
        assert e.value.body["code"] == "context_length_exceeded"


def test_the_server_still_serves_after_bad_requests(client, server) -> None:
    with pytest.raises(openai.BadRequestError):
        chat(client, server, tools=[BROKEN])
    reply = chat(client, server, tool_choice=NAMED, temperature=0)
    check_calls(reply.choices[0].message.tool_calls)


# --- the engine's parts: prompt rendering and the grammar -----------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path):
    engine = EmbeddedEngine(str(tiny_checkpoint))
    yield engine
    engine.close()


CONVERSATION = [
    *ASK,
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [{**CALL, "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]


def test_the_prompt_renders_tools_as_training_did(engine) -> None:
    request = GenerationRequest(CONVERSATION, tools=[WEATHER, CLOCK])
    prompt = chat_prompt(engine.tokenizer, request, engine.model_id)
    assert prompt == get_template("llama-2").render_prompt(CONVERSATION, tools=[WEATHER, CLOCK])
    assert format_tool_calls("Checking.", [{"name": "weather", "arguments": {"city": "Oslo"}}]) in prompt
    no_tools = GenerationRequest(CONVERSATION, tools=[WEATHER], tool_choice="none")
    assert "<tools>" not in chat_prompt(engine.tokenizer, no_tools, engine.model_id)


def test_a_template_from_before_tools_renders_them_with_agentlms_own(engine, monkeypatch) -> None:
    # As the converted Gemma cache written before AgentLM's templates rendered tools.
    old = "<s>{%- for m in messages -%}{{ '[INST] ' + m['content'] + ' [/INST]' }}{%- endfor -%}"
    monkeypatch.setattr(engine.tokenizer, "chat_template", old)
    request = GenerationRequest(CONVERSATION, tools=[WEATHER])
    assert chat_prompt(engine.tokenizer, request, engine.model_id) == get_template("llama-2").render_prompt(
        CONVERSATION, [WEATHER]
    )
    monkeypatch.setattr(engine.tokenizer, "chat_template", "{{ messages[0]['content'] }}")
    with pytest.raises(UnsupportedFeatureError, match="cannot render tools"):
        chat_prompt(engine.tokenizer, request, engine.model_id)


def accepts(engine, text: str, tool_choice="auto", parallel: bool = True) -> bool:
    grammars = engine._tool_grammars
    matcher = grammars.matcher(grammars.compile([WEATHER, CLOCK], tool_choice, parallel))
    return matcher.accept_string(text) and matcher.is_completed()


def test_the_grammar_takes_the_training_format_and_nothing_else(engine) -> None:
    good = format_tool_calls("", [{"name": "weather", "arguments": {"city": "Oslo", "unit": "C", "days": 2}}])
    clock = format_tool_calls("", [{"name": "clock", "arguments": {}}])
    two = f"{good}\n{clock}"
    assert accepts(engine, "Just text.") and accepts(engine, f"Let me see.\n{good}") and accepts(engine, two)
    assert not accepts(engine, good.replace('"C"', '"K"'))  # not in the enum
    assert not accepts(engine, good.replace('"days": 2', '"days": 9'))  # above the maximum
    assert not accepts(engine, good.replace('"unit": "C", ', ""))  # a required property left out
    assert not accepts(engine, good.replace('"city": ', '"city":'))  # not json.dumps' spacing
    assert accepts(engine, good, "required") and accepts(engine, two, "required")
    assert not accepts(engine, "Just text.", "required") and not accepts(engine, f"Hi\n{good}", "required")
    assert not accepts(engine, two, "required", parallel=False) and not accepts(engine, two, parallel=False)
    assert (
        accepts(engine, good, NAMED) and not accepts(engine, clock, NAMED) and not accepts(engine, two, NAMED)
    )


def test_grammars_are_compiled_once_per_tool_set(engine) -> None:
    grammars = engine._tool_grammars
    assert grammars.compile([WEATHER], "auto", True) is grammars.compile([WEATHER], "auto", True)
    assert grammars.compile([WEATHER], "auto", True) is not grammars.compile([WEATHER], "required", True)
    with pytest.raises(InvalidToolSchemaError, match="tool 'lookup'.*Unsupported type"):
        grammars.compile([BROKEN], "auto", True)


def test_the_vocabulary_is_read_for_grammars_at_load_and_kept_between_runs(
    engine, tmp_path: Path, monkeypatch, caplog
) -> None:
    import xgrammar as xgr

    from agentlm.serve.engines.grammar import ToolGrammars

    assert engine._tool_grammars._compiler is not None  # prepared while loading, not on a request
    vocab, stops = engine.llm.n_vocab, sorted(engine.stop_ids)
    first = ToolGrammars(engine.tokenizer, vocab, stops, cache=tmp_path)
    first.prepare()
    [kept] = tmp_path.glob("*.json")
    built = xgr.TokenizerInfo.from_huggingface

    def refuse(*args, **kwargs):
        raise AssertionError("built from the tokenizer again")

    monkeypatch.setattr(xgr.TokenizerInfo, "from_huggingface", refuse)
    again = ToolGrammars(engine.tokenizer, vocab, stops, cache=tmp_path)
    good = format_tool_calls("", [{"name": "weather", "arguments": {"city": "Oslo", "unit": "C"}}])
    for grammars in (first, again):  # the kept vocabulary constrains as the built one does
        matcher = grammars.matcher(grammars.compile([WEATHER], "required", True))
        assert matcher.accept_string(good) and matcher.is_completed()
        assert not grammars.matcher(grammars.compile([WEATHER], "required", True)).accept_string("Hi")
    # A torn file is rebuilt from the tokenizer, with a warning, and written whole again.
    monkeypatch.setattr(xgr.TokenizerInfo, "from_huggingface", built)
    kept.write_text(kept.read_text()[:100])
    ToolGrammars(engine.tokenizer, vocab, stops, cache=tmp_path).prepare()
    assert "unreadable" in caplog.text and xgr.TokenizerInfo.deserialize_json(kept.read_text())


def test_a_vocabulary_xgrammar_cannot_read_is_a_clear_error_on_tool_requests(engine, monkeypatch) -> None:
    import xgrammar as xgr

    from agentlm.serve.engines.grammar import ToolGrammars

    def fail(*args, **kwargs):
        raise RuntimeError("[10:00:00] /x/tokenizer_info.cc:12: unsupported vocabulary")

    monkeypatch.setattr(xgr.TokenizerInfo, "from_huggingface", fail)
    grammars = ToolGrammars(engine.tokenizer, engine.llm.n_vocab, [1])
    with pytest.raises(
        UnsupportedFeatureError, match=r"cannot read its vocabulary \(unsupported vocabulary\)"
    ):
        grammars.compile([WEATHER], "auto", True)


def test_rows_without_tools_are_left_alone_beside_rows_with_them(engine) -> None:
    """A batch mixing a constrained and a free request: each gets what it would get alone."""

    async def reply(**kw) -> tuple[str, list | None]:
        request = GenerationRequest(ASK, max_tokens=120, temperature=0, **kw)
        chunks = [c async for c in engine.generate(request)]
        calls = [call for c in chunks for call in c.tool_calls or []]
        return "".join(c.text for c in chunks), [c["function"]["arguments"] for c in calls] or None

    async def together():
        return await asyncio.gather(reply(), reply(tools=[WEATHER], tool_choice=NAMED))

    alone = [asyncio.run(reply()), asyncio.run(reply(tools=[WEATHER], tool_choice=NAMED))]
    assert asyncio.run(together()) == alone
    assert alone[0][1] is None and alone[1][1] is not None

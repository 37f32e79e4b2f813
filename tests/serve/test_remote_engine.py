"""The remote engine against a scripted OpenAI-compatible server on 127.0.0.1.

The server answers each chat request with the next scripted reply (stream chunks or an error) and
records what it was sent, so the tests see exactly what reaches a remote vLLM or teacher: the
model, the key, tools and tool_choice, tool results; and what comes back: text, tool calls
assembled from fragments or whole, usage, errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from localhttp import bound_socket, run_asgi
from openai import OpenAI

from agentlm.serve.app import create_app
from agentlm.serve.engines import (
    EngineError,
    EngineOverloadedError,
    GenerationChunk,
    GenerationRequest,
    PromptTooLongError,
)
from agentlm.serve.engines.remote import RemoteEngine
from agentlm.serve.settings import ServeSettings

KEY = "sk-remote"
HELLO = [{"role": "user", "content": "What is the weather in Oslo and Rome?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "teacher-7b"}
    return body | {"choices": choices} | ({"usage": usage} if usage else {})


def call_delta(
    index: int, id: str | None = None, name: str | None = None, arguments: str | None = None
) -> dict:
    function = {k: v for k, v in {"name": name, "arguments": arguments}.items() if v is not None}
    return {"index": index, **({"id": id, "type": "function"} if id else {}), "function": function}


# vLLM streams a call's id and name first, then its arguments in pieces; parallel calls interleave.
FRAGMENTED = [
    chunk({"role": "assistant", "content": "Let me check."}),
    chunk({"tool_calls": [call_delta(0, "call_a", "weather", "")]}),
    chunk({"tool_calls": [call_delta(1, "call_b", "weather", '{"ci')]}),
    chunk({"tool_calls": [call_delta(0, arguments='{"city": ')]}),
    chunk({"tool_calls": [call_delta(0, arguments='"Oslo"}')]}),
    chunk({"tool_calls": [call_delta(1, arguments='ty": "Rome"}')]}),
    chunk({}, finish="tool_calls"),
    chunk(usage={"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}),
]
# Other servers send each call whole, in one delta, sometimes without an id.
WHOLE = [
    chunk({"role": "assistant", "tool_calls": [call_delta(0, None, "weather", '{"city": "Oslo"}')]}),
    chunk({}, finish="tool_calls"),
    chunk(usage={"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}),
]
TEXT = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Sunny"}),
    chunk({"content": " today."}, finish="length"),
    chunk(usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}),
]


@dataclass
class Scripted:
    url: str
    replies: list[Any] = field(default_factory=list)  # a list of chunks, or (status, message)
    requests: list[dict] = field(default_factory=list)  # {"path", "body", "authorization"}

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


def scripted_app(state: Scripted) -> FastAPI:
    app = FastAPI()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status)

    @app.get("/v1/models")
    async def models(request: Request):
        state.requests.append({"path": "/v1/models", "authorization": request.headers.get("authorization")})
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return error(401, "bad key")
        return {
            "object": "list",
            "data": [{"id": "teacher-7b", "object": "model", "created": 0, "owned_by": "t"}],
        }

    @app.post("/v1/chat/completions")
    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        auth = request.headers.get("authorization")
        state.requests.append({"path": request.url.path, "body": body, "authorization": auth})
        if auth != f"Bearer {KEY}":
            return error(401, "bad key")
        reply = state.replies.pop(0)
        if isinstance(reply, tuple):
            return error(*reply)
        assert body["stream"] is True  # the engine always streams

        def sse() -> Iterator[str]:
            for c in reply:
                yield f"data: {json.dumps(c)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def remote() -> Iterator[Scripted]:
    sock = bound_socket()
    state = Scripted(f"http://127.0.0.1:{sock.getsockname()[1]}")
    with run_asgi(scripted_app(state), sock):
        yield state


@pytest.fixture
def scripted(remote: Scripted) -> Scripted:
    remote.replies.clear()
    remote.requests.clear()
    return remote


def generate(engine: RemoteEngine, **kw) -> list[GenerationChunk]:
    async def run() -> list[GenerationChunk]:
        return [c async for c in engine.generate(GenerationRequest(**({"messages": HELLO} | kw)))]

    return asyncio.run(run())


def test_the_model_is_discovered_with_the_key(scripted):
    engine = RemoteEngine(scripted.v1, api_key=KEY, served_model_name="teacher")
    assert (engine.remote_model, engine.model_id) == ("teacher-7b", "teacher")
    assert scripted.requests == [{"path": "/v1/models", "authorization": f"Bearer {KEY}"}]
    asyncio.run(engine.health())


def test_from_settings_sends_the_remote_key(scripted):
    settings = ServeSettings(engine="remote", remote_url=scripted.v1, remote_api_key=KEY, model="teacher-7b")
    engine = RemoteEngine.from_settings(settings)
    scripted.replies.append(TEXT)
    assert "".join(c.text for c in generate(engine)) == "Sunny today."
    assert scripted.requests[-1]["authorization"] == f"Bearer {KEY}"


def test_a_wrong_key_is_a_clear_error(scripted):
    with pytest.raises(EngineError, match="could not list the models"):
        RemoteEngine(scripted.v1, api_key="wrong")
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key="wrong")
    with pytest.raises(EngineError, match="bad key"):
        generate(engine)
    with pytest.raises(EngineError, match="not reachable"):
        asyncio.run(engine.health())


def test_tools_and_tool_choice_are_forwarded_as_they_are(scripted):
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key=KEY)
    named = {"type": "function", "function": {"name": "weather"}}
    scripted.replies += [WHOLE, WHOLE]
    generate(engine, tools=[WEATHER], tool_choice=named, max_tokens=64, temperature=0.2, stop=["\n\n"])
    body = scripted.requests[-1]["body"]
    assert body["tools"] == [WEATHER] and body["tool_choice"] == named
    assert body["model"] == "teacher-7b" and body["messages"] == HELLO
    assert (body["max_tokens"], body["temperature"], body["stop"]) == (64, 0.2, ["\n\n"])
    assert body["stream_options"] == {"include_usage": True}
    assert "seed" not in body  # unset fields stay out: some servers reject nulls

    generate(engine, tools=[WEATHER])  # no tool_choice: the server's default ("auto")
    assert (
        "tool_choice" not in scripted.requests[-1]["body"]
        and "max_tokens" not in scripted.requests[-1]["body"]
        and "parallel_tool_calls" not in scripted.requests[-1]["body"]
    )

    scripted.replies.append(WHOLE)
    generate(engine, tools=[WEATHER], parallel_tool_calls=False)
    assert scripted.requests[-1]["body"]["parallel_tool_calls"] is False


def test_tool_choice_without_tools_is_not_sent(scripted):
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key=KEY)
    scripted.replies.append(TEXT)
    generate(engine, tool_choice="none")
    assert not {"tools", "tool_choice"} & set(scripted.requests[-1]["body"])


def test_a_conversation_with_tool_results_is_forwarded(scripted):
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key=KEY)
    call = {
        "id": "call_a",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    }
    messages = [
        *HELLO,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
    ]
    scripted.replies.append(TEXT)
    generate(engine, messages=messages, tools=[WEATHER])
    assert scripted.requests[-1]["body"]["messages"] == messages


def test_streamed_tool_call_fragments_are_assembled(scripted):
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key=KEY)
    scripted.replies.append(FRAGMENTED)
    chunks = generate(engine, tools=[WEATHER], tool_choice="required")
    assert [c.text for c in chunks] == ["Let me check.", ""]
    last = chunks[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("tool_calls", 42, 17)
    assert last.tool_calls == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
        },
    ]
    assert all(c.tool_calls is None and c.finish_reason is None for c in chunks[:-1])


def test_a_whole_tool_call_without_an_id_gets_one(scripted):
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key=KEY)
    scripted.replies.append(WHOLE)
    (last,) = generate(engine, tools=[WEATHER])
    assert last.finish_reason == "tool_calls" and (last.prompt_tokens, last.completion_tokens) == (30, 9)
    (call,) = last.tool_calls
    assert call["id"].startswith("call_") and len(call["id"]) > 5
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}


def test_text_replies_keep_their_finish_reason_and_usage(scripted):
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key=KEY)
    scripted.replies += [TEXT, TEXT]
    chunks = generate(engine)
    assert [c.text for c in chunks] == ["Sunny", " today.", ""]
    assert (chunks[-1].finish_reason, chunks[-1].completion_tokens, chunks[-1].tool_calls) == (
        "length",
        2,
        None,
    )
    raw = generate(engine, messages=[], prompt="The weather is")
    assert scripted.requests[-1]["path"] == "/v1/completions"
    assert scripted.requests[-1]["body"]["prompt"] == "The weather is" and raw[-1].prompt_tokens == 12


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (400, "This model's maximum context length is 4096 tokens", PromptTooLongError),
        (429, "too many requests", EngineOverloadedError),
        (400, "tool_choice names an unknown tool", EngineError),
        (500, "internal", EngineError),
    ],
)
def test_remote_errors_map_to_engine_errors(scripted, status, message, error):
    engine = RemoteEngine(scripted.v1, "teacher-7b", api_key=KEY)
    engine._timeout = 5
    scripted.replies += [(status, message)] * 3  # the client retries 429 and 5xx
    with pytest.raises(error, match=message):
        generate(engine)


# --- through AgentLM's own API: a client asks AgentLM, AgentLM asks the remote ------------------


@pytest.fixture
def api(scripted, tmp_path) -> Iterator[OpenAI]:
    settings = ServeSettings(
        engine="remote", remote_url=scripted.v1, remote_api_key=KEY, served_model_name="teacher",
        store=tmp_path / "s.sqlite3", profiles=[],
    )  # fmt: skip
    with TestClient(create_app(settings)) as http:
        yield OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def test_remote_tool_calls_reach_an_agentlm_client_whole(api, scripted):
    scripted.replies.append(FRAGMENTED)
    reply = api.chat.completions.create(model="teacher", messages=HELLO, tools=[WEATHER], tool_choice="auto")
    assert scripted.requests[-1]["body"]["tools"] == [WEATHER]
    assert scripted.requests[-1]["body"]["tool_choice"] == "auto"
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_a", "weather", '{"city": "Oslo"}'),
        ("call_b", "weather", '{"city": "Rome"}'),
    ]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (42, 17)


def test_remote_tool_calls_reach_an_agentlm_client_streamed(api, scripted):
    scripted.replies.append(FRAGMENTED)
    chunks = list(api.chat.completions.create(model="teacher", messages=HELLO, tools=[WEATHER], stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.id, d.function.name, d.function.arguments) for d in deltas] == [
        (0, "call_a", "weather", '{"city": "Oslo"}'),
        (1, "call_b", "weather", '{"city": "Rome"}'),
    ]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

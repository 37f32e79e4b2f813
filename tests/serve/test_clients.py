"""The clients people will point at AgentLM, against the real server on the tiny model: the
official ``openai`` package (sync, async, streaming, legacy completions) and LangChain's
``ChatOpenAI`` (invoke and stream, on the model and on an agent profile)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI, OpenAI

from agentlm.serve.app import create_app
from agentlm.serve.engines import Engine, GenerationChunk, GenerationRequest
from agentlm.serve.settings import ServeSettings

HELLO = [{"role": "user", "content": "Who works in the People department?"}]
TASK = "How many vacation days does Dana Kim have left?"

# /v1/completions hands the engines a raw prompt (GenerationRequest.prompt) instead of messages.
needs_raw_prompt = pytest.mark.skipif(
    "prompt" not in {f.name for f in fields(GenerationRequest)},
    reason="the engines do not take a raw prompt yet (GenerationRequest.prompt)",
)


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.v1, api_key="EMPTY", max_retries=0)


def chat_model(server, model: str, **kw) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=server.v1, api_key="EMPTY", temperature=0, max_tokens=16, max_retries=0, **kw
    )


# --- openai ------------------------------------------------------------------------------------


def test_sync_client_chat(client: OpenAI, server) -> None:
    reply = client.chat.completions.create(model=server.model_id, messages=HELLO, max_tokens=6, temperature=0)
    assert reply.object == "chat.completion" and reply.model == server.model_id
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].message.tool_calls is None
    assert 0 < reply.usage.completion_tokens <= 6


def test_sync_client_stream(client: OpenAI, server) -> None:
    with client.chat.completions.create(
        model=server.model_id, messages=HELLO, max_tokens=6, temperature=0, stream=True
    ) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_async_client_chat_and_stream(server) -> None:
    async def talk() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=server.v1, api_key="EMPTY", max_retries=0) as aclient:
            kw = {"model": server.model_id, "messages": HELLO, "max_tokens": 8, "temperature": 0}
            reply, stream = await asyncio.gather(
                aclient.chat.completions.create(**kw), aclient.chat.completions.create(**kw, stream=True)
            )
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return reply.choices[0].message.content, streamed

    text, streamed = asyncio.run(talk())
    assert text == streamed  # greedy: the same reply either way


@needs_raw_prompt
def test_legacy_completions(client: OpenAI, server) -> None:
    reply = client.completions.create(
        model=server.model_id, prompt="The People department", max_tokens=5, temperature=0
    )
    assert reply.object == "text_completion" and reply.model == server.model_id
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 5
    streamed = client.completions.create(
        model=server.model_id,
        prompt=["The People department"],
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


@needs_raw_prompt
def test_legacy_completions_use_no_chat_template(client: OpenAI, server) -> None:
    chat = client.chat.completions.create(
        model=server.model_id, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    raw = client.completions.create(model=server.model_id, prompt="Hi", max_tokens=1)
    assert raw.usage.prompt_tokens < chat.usage.prompt_tokens  # no system prompt, no [INST] markers


def test_legacy_completions_refuse_agent_profiles(client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="hr-assistant", prompt=TASK)
    assert e.value.body["param"] == "model" and "/v1/chat/completions" in e.value.body["message"]


# --- LangChain ---------------------------------------------------------------------------------


def test_langchain_invoke_and_stream_on_the_model(server) -> None:
    llm = chat_model(server, server.model_id)
    message = llm.invoke("Who works in the People department?")
    assert isinstance(message, AIMessage) and isinstance(message.content, str)
    assert message.response_metadata["finish_reason"] in ("stop", "length")
    chunks = list(llm.stream("Who works in the People department?"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == message.content


def test_langchain_invoke_and_stream_on_an_agent_profile(server) -> None:
    llm = chat_model(server, "hr-assistant")
    message = llm.invoke(TASK)
    # The untrained model never follows the action format: the run stops, and says so.
    assert "my steps kept going wrong" in message.content
    streamed = "".join(c.content for c in llm.stream(TASK))
    assert "my steps kept going wrong" in streamed


class ToolCalling(Engine):
    """Answers every request with one call of the first tool it was given."""

    model_id = "tool-caller"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        name = request.tools[0]["function"]["name"]
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": name, "arguments": '{"city": "Oslo"}'},
        }
        yield GenerationChunk("", 7, 3, "tool_calls", tool_calls=[call])

    async def health(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_langchain_tool_calling(tmp_path: Path) -> None:
    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    engine = ToolCalling()
    app = create_app(ServeSettings(store=tmp_path / "s.sqlite3", profiles=[]), engine=engine)
    with TestClient(app) as http:
        llm = ChatOpenAI(
            model="tool-caller", base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0
        ).bind_tools([weather], tool_choice="weather")
        message = llm.invoke("Weather in Oslo?")
        assert message.tool_calls == [
            {"name": "weather", "args": {"city": "Oslo"}, "id": "call_1", "type": "tool_call"}
        ]
        streamed = None
        for chunk in llm.stream("Weather in Oslo?"):
            streamed = chunk if streamed is None else streamed + chunk
        assert streamed.tool_calls == message.tool_calls
    sent = engine.requests[0]
    assert sent.tools[0]["function"]["name"] == "weather"
    assert sent.tools[0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert sent.tool_choice == {"type": "function", "function": {"name": "weather"}}

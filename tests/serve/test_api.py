"""The API end to end: the real server on a tiny model, spoken to with the official openai client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from agentlm.serve.app import create_app
from agentlm.serve.engines import Engine, GenerationChunk, GenerationRequest, UnsupportedFeatureError
from agentlm.serve.engines.embedded import EmbeddedEngine
from agentlm.serve.settings import ServeSettings

HELLO = [{"role": "user", "content": "Who works in the People department?"}]


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.v1, api_key="EMPTY", max_retries=0)


def greedy(client: OpenAI, model: str, **kw) -> tuple[str, object]:
    reply = client.chat.completions.create(model=model, messages=HELLO, temperature=0, **kw)
    return reply.choices[0].message.content, reply


def test_models_lists_the_base_model_and_the_agents(client: OpenAI, server) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {server.model_id, "hr-assistant", "scheduling-assistant"}
    assert models["hr-assistant"].owned_by == "agentlm-agent"
    assert models["hr-assistant"].model_extra["agent"]["title"] == "HR assistant"
    assert models[server.model_id].owned_by == "agentlm"


def test_health(server) -> None:
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": server.model_id}


def test_chat_completion_has_openai_shape_and_usage(client: OpenAI, server) -> None:
    text, reply = greedy(client, server.model_id, max_tokens=8)
    assert reply.object == "chat.completion" and reply.model == server.model_id
    assert isinstance(text, str)
    assert reply.choices[0].finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if reply.choices[0].finish_reason == "length":
        assert usage.completion_tokens == 8


def test_max_completion_tokens_is_respected(client: OpenAI, server) -> None:
    _, reply = greedy(client, server.model_id, max_completion_tokens=3)
    assert reply.usage.completion_tokens <= 3


def test_streaming_matches_the_non_streamed_reply(client: OpenAI, server) -> None:
    text, reply = greedy(client, server.model_id, max_tokens=12)
    chunks = list(
        client.chat.completions.create(
            model=server.model_id,
            messages=HELLO,
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == reply.choices[0].finish_reason
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_stop_strings_end_the_reply_before_the_stop(client: OpenAI, server) -> None:
    text, _ = greedy(client, server.model_id, max_tokens=40)
    assert len(text) > 6, text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    expected = text[: text.index(stop)]
    stopped, reply = greedy(client, server.model_id, max_tokens=40, stop=[stop, "never-appears"])
    assert stopped == expected
    assert reply.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model=server.model_id, messages=HELLO, temperature=0, max_tokens=40, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_seeded_sampling_is_reproducible(client: OpenAI, server) -> None:
    def sampled() -> str:
        reply = client.chat.completions.create(
            model=server.model_id, messages=HELLO, temperature=1.0, top_p=0.9, seed=7, max_tokens=10
        )
        return reply.choices[0].message.content

    assert sampled() == sampled()


def test_unknown_model_is_404_model_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert e.value.code == "model_not_found"
    assert e.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(server, body: dict, param: str) -> None:
    response = httpx.post(f"{server.v1}/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


def test_a_body_that_is_not_json_is_400(server) -> None:
    response = httpx.post(
        f"{server.v1}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "body"


def test_unknown_route_has_the_openai_error_shape(server) -> None:
    response = httpx.get(f"{server.v1}/nothing-here")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def agent_run(client: OpenAI, **kw):
    kw.setdefault("max_tokens", 16)
    return client.chat.completions.create(
        model="hr-assistant",
        messages=[{"role": "user", "content": "How many vacation days does Dana Kim have left?"}],
        **kw,
    )


def test_agent_run_is_stored_with_its_invalid_steps(client: OpenAI, server) -> None:
    reply = agent_run(client)
    ext = reply.model_extra["agentlm"]
    # An untrained model never follows the action format: three invalid replies end the run.
    assert ext["stop_reason"] == "invalid_format"
    assert len(ext["steps"]) == 3 and all(s["error"] == "invalid_format" for s in ext["steps"])
    assert "my steps kept going wrong" in reply.choices[0].message.content
    assert reply.usage.completion_tokens == sum(s["completion_tokens"] for s in ext["steps"])

    stored = httpx.get(f"{server.v1}/trajectories/{ext['trajectory_id']}").json()
    assert stored["id"] == ext["trajectory_id"]
    assert stored["profile"] == "hr-assistant" and stored["model"] == server.model_id
    assert stored["task"] == "How many vacation days does Dana Kim have left?"
    assert stored["stop_reason"] == "invalid_format"
    assert stored["steps"] == ext["steps"]
    assert "CREATE TABLE employees" in stored["prompt"][0]["content"]  # the profile's schema went in


def test_agent_stream_carries_steps_then_the_answer(client: OpenAI, server) -> None:
    chunks = list(agent_run(client, stream=True, stream_options={"include_usage": True}))
    ext = [c.model_extra.get("agentlm") for c in chunks]
    steps = [e["step"] for e in ext if e and "step" in e]
    assert len(steps) == 3 and [s["index"] for s in steps] == [0, 1, 2]
    assert all(s["kind"] == "action" and s["error"] == "invalid_format" for s in steps)
    trajectory_ids = {e["trajectory_id"] for e in ext if e}
    assert len(trajectory_ids) == 1 and ext[0] == {"trajectory_id": next(iter(trajectory_ids))}
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["agentlm"]["stop_reason"] == "invalid_format"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "my steps kept going wrong" in content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    (trajectory_id,) = trajectory_ids
    stored = httpx.get(f"{server.v1}/trajectories/{trajectory_id}").json()
    assert stored["steps"] == steps


def test_agent_run_is_stored_when_the_client_leaves(client: OpenAI, server) -> None:
    stream = agent_run(client, stream=True, max_tokens=400)
    trajectory_id = next(iter(stream)).model_extra["agentlm"][
        "trajectory_id"
    ]  # the first chunk names the run
    stream.close()
    deadline = time.monotonic() + 60
    while (response := httpx.get(f"{server.v1}/trajectories/{trajectory_id}")).status_code == 404:
        assert time.monotonic() < deadline, "the abandoned run was never stored"
        time.sleep(0.2)
    stored = response.json()
    # The next model call noticed the client had gone: the run ended early and was still saved.
    assert stored["stop_reason"] == "error" and "client went away" in stored["error"]
    assert len(stored["steps"]) < 3


def test_feedback_is_recorded_and_merged_into_the_trajectory(client: OpenAI, server) -> None:
    trajectory_id = agent_run(client).model_extra["agentlm"]["trajectory_id"]
    body = {
        "trajectory_id": trajectory_id,
        "rating": "down",
        "comment": "wrong",
        "corrected_answer": "12 days",
    }
    response = httpx.post(f"{server.v1}/feedback", json=body)
    assert response.status_code == 200
    assert response.json() == {"trajectory_id": trajectory_id, "status": "recorded"}
    stored = httpx.get(f"{server.v1}/trajectories/{trajectory_id}").json()
    assert stored["feedback"]["rating"] == -1 and stored["feedback"]["corrected_answer"] == "12 days"

    listed = httpx.get(f"{server.v1}/trajectories", params={"profile": "hr-assistant", "limit": 100}).json()
    assert listed["object"] == "list" and trajectory_id in {t["id"] for t in listed["data"]}
    assert httpx.get(f"{server.v1}/trajectories", params={"profile": "nobody"}).json()["data"] == []


def test_feedback_on_an_unknown_trajectory_is_404(server) -> None:
    response = httpx.post(f"{server.v1}/feedback", json={"trajectory_id": "traj-nope", "rating": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "trajectory_not_found"
    assert httpx.get(f"{server.v1}/trajectories/traj-nope").status_code == 404


def test_feedback_rating_must_be_thumbs(server) -> None:
    response = httpx.post(f"{server.v1}/feedback", json={"trajectory_id": "t", "rating": 5})
    assert response.status_code == 400 and response.json()["error"]["param"] == "rating"


def test_api_key_is_required_when_set(tiny_checkpoint, tmp_path) -> None:
    settings = ServeSettings(model=str(tiny_checkpoint), store=tmp_path / "s.sqlite3", api_key="sekret")
    app = create_app(settings, engine=EmbeddedEngine(str(tiny_checkpoint)))
    with TestClient(app) as http:
        denied = http.get("/v1/models")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
        assert http.get("/health").status_code == 200  # probes need no key


def test_an_empty_api_key_variable_means_no_key(monkeypatch) -> None:
    # Compose passes an unset ${AGENTLM_API_KEY:-} as "": a key of "" would refuse every client
    # that sends one (the OpenAI client always does).
    monkeypatch.setenv("AGENTLM_API_KEY", "")
    assert ServeSettings().api_key is None
    monkeypatch.setenv("AGENTLM_API_KEY", "sekret")
    assert ServeSettings().api_key == "sekret"


def test_remote_engine_forwards_to_an_openai_compatible_server(client: OpenAI, server, tmp_path) -> None:
    # A second AgentLM whose model is the first one, reached over HTTP (as vLLM or a teacher would be).
    settings = ServeSettings(
        engine="remote", remote_url=server.v1, served_model_name="teacher", store=tmp_path / "r.sqlite3"
    )
    text, direct = greedy(client, server.model_id, max_tokens=6)
    with TestClient(create_app(settings)) as http:
        ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert ids == ["teacher", "hr-assistant", "scheduling-assistant"]
        body = {"model": "teacher", "messages": HELLO, "max_tokens": 6, "temperature": 0}
        reply = http.post("/v1/chat/completions", json=body).json()
        assert reply["choices"][0]["message"]["content"] == text
        assert reply["usage"] == direct.usage.model_dump(exclude_none=True)
        assert http.get("/health").status_code == 200


# --- tool calling through the API layer (a scripted engine, so the calls are known) --------------


class ToolCaller(Engine):
    """Says a word, then calls `weather` twice (complete calls, on the finishing chunk)."""

    model_id = "tool-caller"

    def __init__(self, error: Exception | None = None):
        self.error = error
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        if self.error:
            raise self.error
        calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "weather", "arguments": f'{{"city": "{c}"}}'},
            }
            for i, c in enumerate(["Oslo", "Rome"])
        ]
        yield GenerationChunk("Checking.", 9, 2)
        yield GenerationChunk("", 9, 20, "tool_calls", tool_calls=calls)

    async def health(self) -> None:
        pass

    def close(self) -> None:
        pass


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def tool_app(tmp_path) -> Iterator[tuple[OpenAI, ToolCaller, TestClient]]:
    engine = ToolCaller()
    app = create_app(ServeSettings(store=tmp_path / "s.sqlite3", profiles=["hr-assistant"]), engine=engine)
    with TestClient(app) as http:
        yield (
            OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0),
            engine,
            http,
        )


def test_tools_reach_the_engine_and_tool_calls_come_back(tool_app) -> None:
    sdk, engine, _ = tool_app
    reply = sdk.chat.completions.create(
        model="tool-caller", messages=HELLO, tools=[WEATHER], tool_choice="required"
    )
    assert engine.requests[0].tools == [WEATHER] and engine.requests[0].tool_choice == "required"
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_0", "weather", '{"city": "Oslo"}'),
        ("call_1", "weather", '{"city": "Rome"}'),
    ]
    assert reply.usage.completion_tokens == 20

    chunks = list(
        sdk.chat.completions.create(
            model="tool-caller",
            messages=HELLO,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "weather"}},
            stream=True,
        )
    )
    assert engine.requests[1].tool_choice == {"type": "function", "function": {"name": "weather"}}
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.id, d.function.name) for d in deltas] == [
        (0, "call_0", "weather"),
        (1, "call_1", "weather"),
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_conversation_with_tool_results_reaches_the_engine(tool_app) -> None:
    sdk, engine, _ = tool_app
    call = {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    messages = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    ]
    sdk.chat.completions.create(model="tool-caller", messages=messages, tools=[WEATHER])
    sent = engine.requests[0].messages
    assert sent[1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_0"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),  # no tools
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "function", "function": {"name": "has spaces"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        ({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice"),
        ({"messages": [{"role": "tool", "content": "sunny"}]}, "messages.0"),  # no tool_call_id
    ],
)
def test_malformed_tool_requests_are_400(tool_app, extra: dict, param: str) -> None:
    _, _, http = tool_app
    response = http.post("/v1/chat/completions", json={"model": "tool-caller", "messages": HELLO, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param)


def test_agents_take_no_tools_from_the_request(tool_app) -> None:
    _, _, http = tool_app
    body = {"model": "hr-assistant", "messages": HELLO, "tools": [WEATHER]}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "tools"


def test_an_engine_refusing_a_feature_is_400(tmp_path) -> None:
    engine = ToolCaller(UnsupportedFeatureError("this chat template cannot render tools"))
    app = create_app(ServeSettings(store=tmp_path / "s.sqlite3", profiles=[]), engine=engine)
    with TestClient(app) as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "tool-caller", "messages": HELLO, "tools": [WEATHER]}
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "this chat template cannot render tools",
        "type": "invalid_request_error",
        "param": None,
        "code": "unsupported_feature",
    }


def test_a_failing_engine_is_500_with_a_request_id_and_no_stack(tmp_path, caplog) -> None:
    engine = ToolCaller(ZeroDivisionError("secret internals"))
    app = create_app(ServeSettings(store=tmp_path / "s.sqlite3", profiles=[]), engine=engine)
    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.post("/v1/chat/completions", json={"model": "tool-caller", "messages": HELLO})
    assert response.status_code == 500
    error = response.json()["error"]
    assert (
        error["type"] == "server_error" and "secret" not in response.text and "Traceback" not in response.text
    )
    request_id = error["message"].rsplit(" ", 1)[-1]
    assert request_id.startswith("req-") and request_id in caplog.text and "ZeroDivisionError" in caplog.text


def test_openapi_document_is_served_and_declares_the_errors(server) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]) == {"200", "400", "401", "404", "413", "429", "500"}
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert "/v1/completions" in doc["paths"] and "/metrics" in doc["paths"]
    assert "ChatCompletionChunk" in doc["components"]["schemas"]
    assert "422" not in str(doc)  # validation errors are 400s


def test_openapi_document_types_the_trajectory_and_the_agent_extension(server) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def free_form(schema: object) -> list[object]:
        """Objects that accept any properties: what a typed record must not contain."""
        if isinstance(schema, list):
            return [f for item in schema for f in free_form(item)]
        if not isinstance(schema, dict):
            return []
        loose = schema.get("type") == "object" and (
            "properties" not in schema or schema.get("additionalProperties") not in (None, False)
        )
        return [schema] * loose + [f for value in schema.values() for f in free_form(value)]

    typed = ("AgentRun", "ActionStep", "FinalAnswerStep", "ToolCall", "RepairRecord", "Feedback")
    for name in typed:
        assert free_form(schemas[name]) == [], name
    steps = schemas["AgentRun"]["properties"]["steps"]["anyOf"][0]["items"]
    assert steps["discriminator"]["mapping"] == {
        "action": "#/components/schemas/ActionStep",
        "answer": "#/components/schemas/FinalAnswerStep",
    }
    for model in ("ChatCompletionResponse", "ChatCompletionChunk"):
        assert schemas[model]["properties"]["agentlm"]["anyOf"][0] == {
            "$ref": "#/components/schemas/AgentRun"
        }
    one = doc["paths"]["/v1/trajectories/{trajectory_id}"]["get"]["responses"]["200"]["content"]
    assert one["application/json"]["schema"] == {"$ref": "#/components/schemas/Trajectory"}
    page = schemas["TrajectoryList"]["properties"]["data"]
    assert page["items"] == {"$ref": "#/components/schemas/Trajectory"}
    assert set(schemas["Trajectory"]["properties"]["steps"]["items"]["discriminator"]["mapping"]) == {
        "action",
        "answer",
    }

"""The API end to end: the real server on a tiny model, spoken to with the official openai client."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from agentlm.serve.app import create_app
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
    assert "action format" in reply.choices[0].message.content
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
    assert "action format" in content
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

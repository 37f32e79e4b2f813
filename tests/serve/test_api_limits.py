"""The HTTP layer's guards and gauges: body size limit (413), CORS, overload (429), /metrics.

Scripted engines stand in for the model: these paths are about the server, not about generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agentlm.serve.app import create_app
from agentlm.serve.engines import Engine, EngineOverloadedError, GenerationChunk, GenerationRequest
from agentlm.serve.settings import ServeSettings

HELLO = [{"role": "user", "content": "hello"}]
ORIGIN = "https://app.example.com"


class Scripted(Engine):
    """Replies with its scripted texts in turn (the last one again once they run out)."""

    model_id = "scripted"

    def __init__(self, *replies: str):
        self.replies = list(replies) or ["Hello there."]
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        words = reply.split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield GenerationChunk(word if i == 0 else " " + word, 5, i + 1, "stop" if last else None)

    async def health(self) -> None:
        pass

    def close(self) -> None:
        pass


class Overloaded(Scripted):
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise EngineOverloadedError("64 requests are already waiting")
        yield  # an async generator, like every engine


def make_app(tmp_path: Path, engine: Engine, **settings) -> FastAPI:
    settings.setdefault("profiles", ["hr-assistant"])
    return create_app(ServeSettings(store=tmp_path / "store.sqlite3", **settings), engine=engine)


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path, Scripted(), max_body_bytes=2048)) as client:
        yield client


def chat(model: str = "scripted", **kw) -> dict:
    return {"model": model, "messages": HELLO, **kw}


# --- 413 ---------------------------------------------------------------------------------------


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "2048 bytes" in error["message"]


def test_a_body_over_the_limit_is_413(http: TestClient) -> None:
    assert http.post("/v1/chat/completions", json=chat(user="x" * 1000)).status_code == 200
    assert_too_large(http.post("/v1/chat/completions", json=chat(user="x" * 3000)))


def test_a_content_length_that_claims_too_much_is_413_before_reading(http: TestClient) -> None:
    response = http.post(
        "/v1/chat/completions",
        content=b"{}",
        headers={"content-length": "999999999", "content-type": "application/json"},
    )
    assert_too_large(response)
    assert_too_large(
        http.get("/v1/models", headers={"content-length": "999999"})
    )  # a route that reads no body


def test_a_content_length_that_claims_too_little_does_not_let_more_through(tmp_path: Path) -> None:
    # Over a socket the server would stop at the declared length; in ASGI the bytes are counted.
    app = make_app(tmp_path, Scripted(), max_body_bytes=2048)
    body = httpx.Request("POST", "http://t", json=chat(user="x" * 5000)).content

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                "/v1/chat/completions",
                content=body,
                headers={"content-length": "100", "content-type": "application/json"},
            )

    response = asyncio.run(post())
    assert response.request.headers["content-length"] == "100"
    assert_too_large(response)


def test_a_chunked_body_is_counted_too(http: TestClient) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "scripted", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}]}'

    response = http.post(
        "/v1/chat/completions", content=pieces(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_too_large(response)


def test_the_live_server_rejects_a_big_chunked_upload(server) -> None:
    limit = server.settings.max_body_bytes

    def pieces() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    response = httpx.post(
        f"{server.v1}/chat/completions", content=pieces(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


# --- CORS --------------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str) -> httpx.Response:
    return client.options(
        "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )


def test_cors_is_off_by_default(http: TestClient) -> None:
    response = preflight(http, ORIGIN)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in http.get("/v1/models", headers={"Origin": ORIGIN}).headers


def test_cors_allows_the_configured_origins_only(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, Scripted(), cors_origins=[ORIGIN])) as client:
        allowed = preflight(client, ORIGIN)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in allowed.headers["access-control-allow-methods"]
        reply = client.post("/v1/chat/completions", json=chat(), headers={"Origin": ORIGIN})
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == ORIGIN

        denied = preflight(client, "https://evil.example.com")
        assert denied.status_code == 400
        assert "access-control-allow-origin" not in denied.headers


# --- 429 ---------------------------------------------------------------------------------------


def test_an_overloaded_engine_is_429_with_retry_after(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, Overloaded())) as client:
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json=chat(stream=stream))
            assert response.status_code == 429, response.text
            assert int(response.headers["retry-after"]) >= 1
            error = response.json()["error"]
            assert error["code"] == "engine_overloaded" and "retry" in error["message"]
        # The official client knows it as a rate limit (and would retry after Retry-After).
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=client, max_retries=0)
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="scripted", messages=HELLO)


# --- /metrics ----------------------------------------------------------------------------------


def samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_tokens_and_agent_runs(tmp_path: Path) -> None:
    sql_error = "I look.\nAction: Operation\n```sql\nSELECT * FROM no_such_table;\n```"
    answer = "Found it.\nAction: Answer\nFinal Answer: 12 days."
    engine = Scripted("Hello there friend.", sql_error, answer)
    with TestClient(make_app(tmp_path, engine, api_key="sekret")) as client:
        before = samples(client)  # no API key needed, like /health
        auth = {"Authorization": "Bearer sekret"}
        assert client.post("/v1/chat/completions", json=chat(), headers=auth).status_code == 200
        assert client.post("/v1/chat/completions", json=chat("nope"), headers=auth).status_code == 404
        assert client.get("/v1/trajectories/traj-nope", headers=auth).status_code == 404
        assert client.get("/v1/models").status_code == 401
        run = client.post("/v1/chat/completions", json=chat("hr-assistant"), headers=auth).json()
        assert run["agentlm"]["stop_reason"] == "answer"
        after = samples(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "agentlm_http_requests_total"
    assert moved(requests, method="POST", route="/v1/chat/completions", status="200") == 2
    assert moved(requests, method="POST", route="/v1/chat/completions", status="404") == 1
    # Routes are counted by template, never by the raw path a client chose.
    assert moved(requests, method="GET", route="/v1/trajectories/{trajectory_id}", status="404") == 1
    assert moved(requests, method="GET", route="/v1/models", status="401") == 1
    assert (
        moved("agentlm_http_request_duration_seconds_count", method="POST", route="/v1/chat/completions") == 3
    )
    assert moved("agentlm_generation_tokens_total", model="scripted") == 3  # "Hello there friend."
    assert moved("agentlm_prompt_tokens_total", model="scripted") == 5
    assert moved("agentlm_time_to_first_token_seconds_count", model="scripted") == 1

    assert moved("agentlm_agent_runs_total", profile="hr-assistant", stop_reason="answer") == 1
    assert (
        moved("agentlm_agent_steps_total", profile="hr-assistant", kind="action", outcome="tool_error") == 1
    )
    assert moved("agentlm_agent_steps_total", profile="hr-assistant", kind="answer", outcome="ok") == 1
    tool_errors = [k for k in after if k[0] == "agentlm_agent_tool_errors_total"]
    assert [dict(labels)["profile"] for _, labels in tool_errors] == ["hr-assistant"]
    assert moved("agentlm_generation_tokens_total", model="hr-assistant") > 0


def test_each_app_has_its_own_metrics(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, Scripted())) as one, TestClient(make_app(tmp_path, Scripted())) as two:
        one.get("/v1/models")
        key = (
            "agentlm_http_requests_total",
            frozenset({"method": "GET", "route": "/v1/models", "status": "200"}.items()),
        )
        assert samples(one)[key] == 1
        assert key not in samples(two)

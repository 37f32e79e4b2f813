"""Schemathesis over the app's own OpenAPI document: every operation gets generated requests, valid
and invalid, and no answer may be a 5xx or differ from what the document promises (status codes,
content types, headers, body schemas).

The engine is the real embedded engine on the tiny model, with each reply capped at a few tokens
(``Capped``) so a thousand requests, agent runs among them, take well under a minute.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import fields, replace
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agentlm.serve.app import create_app
from agentlm.serve.engines import Engine, GenerationChunk, GenerationRequest
from agentlm.serve.engines.embedded import EmbeddedEngine
from agentlm.serve.settings import ServeSettings
from agentlm.serve.store import TrajectoryStore

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MIN_REQUESTS = 1000
# Generated examples per operation and mode. Operations with small input spaces (GET /health)
# run out of distinct examples early; the request bodies take most of the budget.
POSITIVE, NEGATIVE = 150, 60
RAW_PROMPT = "prompt" in {f.name for f in fields(GenerationRequest)}


class Capped(Engine):
    """The tiny model, replying with at most `cap` tokens whatever the request asked for."""

    def __init__(self, inner: Engine, cap: int = 4):
        self.inner, self.cap = inner, cap
        self.model_id = inner.model_id

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        return self.inner.generate(replace(request, max_tokens=min(request.max_tokens or self.cap, self.cap)))

    async def health(self) -> None:
        await self.inner.health()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def schema(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    settings_ = ServeSettings(store=tmp_path_factory.mktemp("fuzz") / "t.sqlite3")
    app = create_app(settings_, engine=Capped(EmbeddedEngine(str(tiny_checkpoint))))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()  # the app's lifespan: closes the engine, the store, the profiles' databases


def fuzz(
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    model_ids: list[str],
    store: TrajectoryStore,
    statuses: Counter,
) -> None:
    """Send `operation` the requests Hypothesis generates in `mode`, checking every answer."""
    positive = mode == schemathesis.GenerationMode.POSITIVE
    checks = CHECKS if positive else [*CHECKS, negative_data_rejection]
    # Random model and trajectory ids all end in 404: send real ones often, so generation and
    # agents run, and feedback and approvals find the runs (the chat operation comes first).
    real_models = positive and (RAW_PROMPT or operation.path != "/v1/completions")

    @given(
        case=operation.as_strategy(generation_mode=mode),
        model=st.sampled_from([*model_ids, None]),
        known_run=st.booleans(),
    )
    @settings(
        max_examples=POSITIVE if positive else NEGATIVE,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case, model: str | None, known_run: bool) -> None:
        body = case.body if isinstance(case.body, dict) else {}
        if real_models and model and "model" in body:
            body["model"] = model
        newest = store.list(limit=1)
        if positive and known_run and newest:
            if "trajectory_id" in (case.path_parameters or {}):
                case.path_parameters["trajectory_id"] = newest[0].id
            if "trajectory_id" in body:
                body["trajectory_id"] = newest[0].id
        response = case.call()
        statuses[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=checks)

    try:
        run()
    except Unsatisfiable:
        assert not positive, operation.label  # an operation without inputs has no invalid requests


def test_generated_requests_get_no_5xx_and_match_the_document(schema) -> None:
    serving = schema.app.state.serving
    model_ids = [serving.engine.model_id, "hr-assistant", "scheduling-assistant"]
    statuses: Counter[tuple[str, int]] = Counter()  # (operation, status) -> responses
    started = time.monotonic()
    for result in schema.get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz(result.ok(), mode, model_ids, serving.store, statuses)

    total = sum(statuses.values())
    print(f"\n{total} requests in {time.monotonic() - started:.0f} s")
    for (label, status), count in sorted(statuses.items()):
        print(f"  {count:5d}  {status}  {label}")
    assert total >= MIN_REQUESTS
    assert not [key for key in statuses if key[1] >= 500]
    assert sum(n for (_, status), n in statuses.items() if status == 200) > 100  # not only 4xx

"""The HTTP layer: thin FastAPI routes over ``Serving``, OpenAI-shaped errors, and ``run``.

    GET  /health                      the engine can serve (no API key needed: probes)
    GET  /metrics                     Prometheus metrics (no API key needed: keep it off public networks)
    GET  /openapi.json                the OpenAPI document of all of this
    GET  /v1/models                   the served model, then one id per agent profile
    POST /v1/chat/completions         chat with the model (tools too), or run an agent (stream or not)
    POST /v1/completions              raw text completion on the served model (no chat template)
    POST /v1/feedback                 thumbs up/down, comment, corrected answer for a run
    GET  /v1/trajectories[/{id}]      stored agent runs, newest first (also /stats, /export)
    GET  /v1/promotions               the checkpoint promotion decisions, newest first
    POST /v1/trajectories/{id}/writes approve or discard the database changes a run is holding

Engines are imported when ``create_app`` builds one, never at import time. Statuses: 400 invalid
request (OpenAI's choice over FastAPI's 422), 401 API key, 404 unknown model/trajectory/route, 409
writes already decided, 413 body over ``max_body_bytes``, 429 engine queue full (with Retry-After),
500 with a request id (the log has the stack, the body never does), 503 engine down (/health) or
the trajectory store unreachable (with Retry-After: nothing was recorded).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentlm.agent.profiles import load_profile
from agentlm.serve.engines import Engine, EngineError, create_engine
from agentlm.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from agentlm.serve.promotions import router as promotions_router
from agentlm.serve.protocol import (
    MESSAGE_ROLES,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorInfo,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ModelList,
    WritesRequest,
    WritesResponse,
    error_responses,
    random_id,
    wire,
)
from agentlm.serve.serving import APIError, Serving
from agentlm.serve.settings import ServeSettings
from agentlm.serve.store import StoreError, StoreInputError, open_store
from agentlm.serve.trajectories import router as trajectories_router

log = logging.getLogger(__name__)


def _serving(request: Request) -> Serving:
    return request.app.state.serving


def _check_api_key(request: Request) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise APIError(401, "invalid or missing API key", type="authentication_error", code="invalid_api_key")


ServingDep = Annotated[Serving, Depends(_serving)]
# Any request can be too large or hit a bug; every /v1 route can need the API key or be malformed.
router = APIRouter(responses=error_responses(413, 500))
v1 = APIRouter(
    prefix="/v1", dependencies=[Depends(_check_api_key)], responses=error_responses(400, 401, 413, 500)
)


# Streamed chunks' models: not any route's body, so added to the OpenAPI components by hand.
_CHUNK_MODELS = (ChatCompletionChunk, CompletionResponse)


def _streamed(chunk_model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of a route that answers JSON, or server-sent events with ``stream: true``.

    Before OpenAPI 3.2 (``itemSchema``), a ``text/event-stream`` schema describes one event; the
    event's ``data`` is a chunk's JSON, an error's JSON (a failure after the headers went out), or
    the closing ``[DONE]``."""

    def json_of(model: type[BaseModel]) -> dict[str, Any]:
        return {
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{model.__name__}"},
        }

    event = {
        "type": "object",
        "description": f"with `stream: true`: one `data: <{chunk_model.__name__} JSON>` event per chunk, "
        "then `data: [DONE]`",
        "properties": {
            "data": {
                "type": "string",
                "anyOf": [{"const": "[DONE]"}, json_of(chunk_model), json_of(ErrorResponse)],
            }
        },
        "required": ["data"],
    }
    return {200: {"content": {"text/event-stream": {"schema": event}}}, **error_responses(404, 429)}


def _answer(result: Any) -> Response:
    if isinstance(result, AsyncIterator):
        return StreamingResponse(
            result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return JSONResponse(wire(result))


@router.get("/health", responses=error_responses(503))
async def health(serving: ServingDep) -> HealthResponse:
    try:
        await serving.engine.health()
    except EngineError as e:
        raise APIError(503, str(e), type="server_error") from e
    return HealthResponse(model=serving.engine.model_id)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request) -> Response:
    # Like /health, not behind the API key: scrapers rarely carry one. Bind the server to a
    # private interface (or filter /metrics at the proxy) where the counts should stay private.
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


@v1.get("/models")
async def models(serving: ServingDep) -> ModelList:
    return serving.models()


@v1.post("/chat/completions", response_model=ChatCompletionResponse, responses=_streamed(ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, serving: ServingDep) -> Response:
    return _answer(await serving.chat(body))


@v1.post("/completions", response_model=CompletionResponse, responses=_streamed(CompletionResponse))
async def completions(body: CompletionRequest, serving: ServingDep) -> Response:
    return _answer(await serving.completions(body))


# Store calls block (SQLite, fsync on commit): plain `def` routes run in FastAPI's thread pool.
@v1.post("/feedback", responses=error_responses(404))
def feedback(body: FeedbackRequest, serving: ServingDep) -> FeedbackResponse:
    return serving.feedback(body)


@v1.post("/trajectories/{trajectory_id}/writes", responses=error_responses(404, 409))
def writes(trajectory_id: str, body: WritesRequest, serving: ServingDep) -> WritesResponse:
    return serving.decide_writes(trajectory_id, body)


def _error(
    status: int, message: str, type: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


def _field(err: dict[str, Any]) -> str:
    """The field a validation error is about, as OpenAI names it: "messages.0.role"."""
    if err["type"] == "json_invalid":
        return "body"
    loc = list(err["loc"])
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the tag itself is wrong
        loc.append(err["ctx"]["discriminator"].strip("'"))
    # Pydantic puts a message's role (the union's tag) in the location: messages.0.tool.tool_call_id
    loc = [p for i, p in enumerate(loc) if not (p in MESSAGE_ROLES and i and isinstance(loc[i - 1], int))]
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path")) or "body"


def _install_openapi(app: FastAPI) -> None:
    """FastAPI's document, less the 422 it adds to every route: validation errors answer 400."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for path in schema["paths"].values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            for model in _CHUNK_MODELS:
                chunk = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in chunk.pop("$defs", {}).items():
                    components.setdefault(name, definition)
                components.setdefault(model.__name__, chunk)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers 400 naming the field, where FastAPI would answer 422 with its own shape.
        fields = [_field(err) for err in exc.errors()]
        problems = "; ".join(
            f"{field}: {err['msg']}" for field, err in zip(fields, exc.errors(), strict=True)
        )
        return _error(
            400, f"invalid request: {problems}", "invalid_request_error", fields[0] if fields else None
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, RequestTooLarge):
            return exc.response()
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, StoreInputError):
            return _error(400, f"invalid request: {exc}", "invalid_request_error")
        # Nothing was recorded: the client may retry, on this replica or another.
        log.error("request %s %s: %s", request.method, request.url.path, exc)
        response = _error(503, f"{exc}; nothing was recorded, retry later", "server_error")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = random_id("req")
        log.error("request %s (%s %s) failed", request_id, request.method, request.url.path, exc_info=exc)
        return _error(
            500, f"internal server error; the server log has the details under {request_id}", "server_error"
        )


class RequestTooLarge(StarletteHTTPException):
    """A request body over the limit. An HTTPException, so FastAPI's body reading passes it on."""

    def __init__(self, limit: int):
        super().__init__(
            413, f"the request body is larger than {limit} bytes, this server's limit (max_body_bytes)"
        )

    def response(self) -> JSONResponse:
        return _error(413, str(self.detail), "invalid_request_error", code="request_too_large")


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes``. The bytes are counted as they arrive, so a
    Content-Length that claims less, or a chunked body with none, gets no more through."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await RequestTooLarge(self.max_bytes).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except RequestTooLarge as e:
            if started:
                raise
            await e.response()(scope, receive, send)


def create_app(settings: ServeSettings | None = None, engine: Engine | None = None) -> FastAPI:
    """The API app; loads the model now (unless given an engine), so a bad model fails before serving.

    Raises ``ModelNotFoundError`` when the model does not exist. The app closes the engine on shutdown.
    """
    settings = settings or ServeSettings()
    profiles = {p.id: p for p in (load_profile(name) for name in settings.profiles)}
    for profile in profiles.values():
        profile.opening_messages()  # builds a sample database now, not racing inside two first runs
    engine = engine or create_engine(settings)
    store = open_store(settings.store)
    metrics = Metrics()
    serving = Serving(engine, store, profiles, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()
        store.close()
        for profile in profiles.values():
            profile.sql_tool.close()

    # One schema per model for requests and responses: responses leave out None fields, which
    # FastAPI's separate output schemas would mark as always present.
    app = FastAPI(title="AgentLM", version="0.1.0", lifespan=lifespan, separate_input_output_schemas=False)
    app.state.settings = settings
    app.state.serving = serving
    app.state.metrics = metrics
    _install_error_handlers(app)
    _install_openapi(app)
    # The last added runs first: metrics see every answer, CORS headers go on 413s too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],  # the openai client sends many x-stainless-* headers
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
    app.include_router(v1)
    # GET /v1/trajectories, /export, /{id} (serve/trajectories.py), guarded as every /v1 route.
    app.include_router(trajectories_router, dependencies=v1.dependencies, responses=v1.responses)
    app.include_router(promotions_router, dependencies=v1.dependencies, responses=v1.responses)
    return app


def run(settings: ServeSettings) -> None:
    """Load the model, then serve until interrupted."""
    import uvicorn

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    model_id = app.state.serving.engine.model_id
    log.info(
        "model %s, agents %s: http://%s:%d/v1",
        model_id,
        ", ".join(settings.profiles),
        settings.host,
        settings.port,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")

"""The HTTP layer: thin FastAPI routes over ``Serving``, OpenAI-shaped errors, and ``run``.

    GET  /health                      the engine can serve
    GET  /v1/models                   the served model, then one id per agent profile
    POST /v1/chat/completions         chat with the model, or run an agent (stream or not)
    POST /v1/feedback                 thumbs up/down, comment, corrected answer for a run
    GET  /v1/trajectories[/{id}]      stored agent runs, newest first
    POST /v1/trajectories/{id}/writes approve or discard the database changes a run is holding

Engines are imported when ``create_app`` builds one, never at import time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentlm.agent.profiles import load_profile
from agentlm.serve.engines import Engine, EngineError, create_engine
from agentlm.serve.protocol import (
    ChatCompletionRequest,
    ErrorInfo,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelList,
    TrajectoryList,
    WritesRequest,
    WritesResponse,
    random_id,
)
from agentlm.serve.serving import APIError, Serving
from agentlm.serve.settings import ServeSettings
from agentlm.serve.store import TrajectoryStore

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
router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(_check_api_key)])


@router.get("/health")
async def health(serving: ServingDep) -> dict[str, str]:
    try:
        await serving.engine.health()
    except EngineError as e:
        raise APIError(503, str(e), type="server_error") from e
    return {"status": "ok", "model": serving.engine.model_id}


@v1.get("/models")
async def models(serving: ServingDep) -> ModelList:
    return serving.models()


@v1.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, serving: ServingDep) -> Any:
    result = await serving.chat(body)
    if isinstance(result, AsyncIterator):
        return StreamingResponse(
            result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return JSONResponse(result.model_dump(exclude_none=True))


# Store calls block (SQLite, fsync on commit): plain `def` routes run in FastAPI's thread pool.
@v1.post("/feedback")
def feedback(body: FeedbackRequest, serving: ServingDep) -> FeedbackResponse:
    return serving.feedback(body)


@v1.get("/trajectories")
def trajectories(
    serving: ServingDep,
    profile: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> TrajectoryList:
    return serving.trajectories(profile, limit, offset)


@v1.get("/trajectories/{trajectory_id}")
def trajectory(trajectory_id: str, serving: ServingDep) -> dict[str, Any]:
    return serving.trajectory(trajectory_id)


@v1.post("/trajectories/{trajectory_id}/writes")
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
    return ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path")) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(), status_code=exc.status)

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
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = random_id("req")
        log.error("request %s (%s %s) failed", request_id, request.method, request.url.path, exc_info=exc)
        return _error(
            500, f"internal server error; the server log has the details under {request_id}", "server_error"
        )


def create_app(settings: ServeSettings | None = None, engine: Engine | None = None) -> FastAPI:
    """The API app; loads the model now (unless given an engine), so a bad model fails before serving.

    Raises ``ModelNotFoundError`` when the model does not exist. The app closes the engine on shutdown.
    """
    settings = settings or ServeSettings()
    profiles = {p.id: p for p in (load_profile(name) for name in settings.profiles)}
    for profile in profiles.values():
        profile.opening_messages()  # builds a sample database now, not racing inside two first runs
    engine = engine or create_engine(settings)
    store = TrajectoryStore(settings.store)
    serving = Serving(engine, store, profiles)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()
        store.close()
        for profile in profiles.values():
            profile.sql_tool.close()

    app = FastAPI(title="AgentLM", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.serving = serving
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(v1)
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

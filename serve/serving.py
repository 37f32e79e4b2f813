"""The API's logic, apart from HTTP: chat and text completions, agent runs, feedback, trajectories.

Routes (``app.py``) stay thin; everything here works on protocol objects and raises ``APIError``
with an OpenAI-shaped error, so it reads (and tests) without FastAPI. A chat completion whose
``model`` is the served model goes straight to the engine; one whose ``model`` is an agent profile
runs that agent server-side on the whole conversation (the last user message is the task, the
turns before it the run's history) and reports its steps in the ``agentlm`` extension field. A
text completion (``/v1/completions``) hands the engine the raw prompt
(``GenerationRequest.prompt``): no chat template, and only on the served model. Engine errors map
to statuses here: prompt too long, feature unsupported or a tool schema the engine cannot
constrain 400, queue full 429, any other 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from agentlm.agent.models import GenerationParams
from agentlm.agent.profiles import ConversationError, Profile, split_conversation
from agentlm.agent.trajectory import Feedback, Step, Trajectory, new_trajectory_id
from agentlm.api import AGENT_OWNER
from agentlm.serve.agents import agent_response, run_agent, stream_agent
from agentlm.serve.engines import (
    Engine,
    EngineError,
    EngineOverloadedError,
    GenerationChunk,
    GenerationRequest,
    InvalidToolSchemaError,
    PromptTooLongError,
    UnsupportedFeatureError,
)
from agentlm.serve.metrics import Metrics
from agentlm.serve.protocol import (
    AgentInfo,
    ChatCompletionAssistantMessageParam,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    ChatCompletionNamedToolChoiceParam,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionStreamChoice,
    ChatCompletionToolMessageParam,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ErrorInfo,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
    UsageInfo,
    WritesRequest,
    WritesResponse,
    random_id,
    sse,
)
from agentlm.serve.store import TrajectoryStore

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1  # the Retry-After of a 429: a queue slot frees when any reply finishes


# What the user reads when an agent run ends without an answer.
class APIError(Exception):
    """An error the client caused or should see, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
        self.headers = headers


class Serving:
    """Serves one engine's model and the agent profiles built on it."""

    def __init__(
        self,
        engine: Engine,
        store: TrajectoryStore,
        profiles: dict[str, Profile],
        metrics: Metrics | None = None,
    ):
        if engine.model_id in profiles:
            raise ValueError(
                f"the served model id {engine.model_id!r} is also an agent profile id; rename one"
            )
        self.engine = engine
        self.store = store
        self.profiles = profiles
        self.metrics = metrics or Metrics()

    # --- models ---------------------------------------------------------------------------------

    def models(self) -> ModelList:
        cards = [ModelCard(id=self.engine.model_id)]
        for p in self.profiles.values():
            info = AgentInfo(title=p.title, description=p.description, examples=p.examples)
            cards.append(ModelCard(id=p.id, owned_by=AGENT_OWNER, agent=info))
        return ModelList(data=cards)

    # --- chat completions -----------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse | AsyncIterator[str]:
        """A response, or for ``stream`` the server-sent events to send (ending with [DONE])."""
        _check_tool_choice(request)
        if request.model == self.engine.model_id:
            return await self._chat_model(request)
        if request.model in self.profiles:
            if request.tools:
                raise APIError(
                    400,
                    f"the agent {request.model!r} brings its own tools and takes none from the request; "
                    f"send tools to the served model {self.engine.model_id!r}",
                    param="tools",
                )
            return await self._chat_agent(request, self.profiles[request.model])
        raise self._unknown_model(request.model)

    def _unknown_model(self, model: str) -> APIError:
        available = ", ".join(c.id for c in self.models().data)
        return APIError(
            404,
            f"The model '{model}' does not exist; available: {available}",
            param="model",
            code="model_not_found",
        )

    async def _start(
        self, generation: GenerationRequest, model: str, prompt_param: str
    ) -> AsyncIterator[GenerationChunk]:
        """Start a generation and wait for its first chunk, so a refused request is an HTTP error
        and not a broken stream; returns all its chunks (the first included)."""
        started = time.perf_counter()
        chunks = self.engine.generate(generation)
        try:
            first = await anext(chunks)
        except PromptTooLongError as e:
            raise APIError(400, str(e), param=prompt_param, code="context_length_exceeded") from e
        except EngineOverloadedError as e:
            raise APIError(
                429,
                f"the server is busy ({e}); retry in a moment",
                type="rate_limit_error",
                code="engine_overloaded",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from e
        except UnsupportedFeatureError as e:
            raise APIError(400, str(e), code="unsupported_feature") from e
        except InvalidToolSchemaError as e:
            raise APIError(400, str(e), param="tools", code="invalid_tool_schema") from e
        except EngineError as e:
            raise APIError(500, f"the model failed: {e}", type="server_error") from e
        self.metrics.time_to_first_token.labels(model).observe(time.perf_counter() - started)
        return self._chunks(model, first, chunks)

    async def _chunks(
        self, model: str, first: GenerationChunk, chunks: AsyncIterator[GenerationChunk]
    ) -> AsyncIterator[GenerationChunk]:
        """The chunks up to the finishing one; counts the tokens however the generation ends, and
        stops the engine when the consumer leaves early."""
        last = first
        try:
            yield first
            if first.finish_reason is None:
                async for last in chunks:  # noqa: B007 (`last` is read in finally)
                    yield last
                    if last.finish_reason is not None:
                        break
        finally:
            self.metrics.tokens(model, last.prompt_tokens, last.completion_tokens)
            await chunks.aclose()  # type: ignore[attr-defined]

    def _generation(
        self, request: ChatCompletionRequest | CompletionRequest, request_id: str, **kw: Any
    ) -> GenerationRequest:
        return GenerationRequest(
            max_tokens=request.max_new_tokens(),
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=request.stop or [],  # type: ignore[arg-type]
            seed=request.seed,
            request_id=request_id,
            **kw,
        )

    async def _chat_model(
        self, request: ChatCompletionRequest
    ) -> ChatCompletionResponse | AsyncIterator[str]:
        request_id = random_id("chatcmpl")
        _check_tool_messages(request)
        tools, tool_choice = request.engine_tools()
        generation = self._generation(
            request,
            request_id,
            messages=request.chat_messages(),
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=request.parallel_tool_calls,
        )
        chunks = await self._start(generation, request.model, "messages")
        if request.stream:
            return self._stream_model(request, request_id, chunks)
        parts: list[str] = []
        calls: list[dict[str, Any]] = []
        try:
            async for last in chunks:  # noqa: B007 (the last chunk has the finish reason and usage)
                parts.append(last.text)
                calls.extend(last.tool_calls or [])
        except EngineError as e:
            raise APIError(500, f"the model failed: {e}", type="server_error") from e
        tool_calls = [ChatCompletionMessageToolCall.model_validate(c) for c in calls] or None
        content = "".join(parts)
        message = ChatCompletionMessage(
            content=None if tool_calls and not content else content, tool_calls=tool_calls
        )
        return ChatCompletionResponse(
            id=request_id,
            model=request.model,
            choices=[ChatCompletionResponseChoice(message=message, finish_reason=last.finish_reason)],
            usage=UsageInfo.of(last.prompt_tokens, last.completion_tokens),
        )

    async def _stream_model(
        self, request: ChatCompletionRequest, request_id: str, chunks: AsyncIterator[GenerationChunk]
    ) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: DeltaMessage, finish_reason: Any = None) -> ChatCompletionChunk:
            choice = ChatCompletionStreamChoice(delta=delta, finish_reason=finish_reason)
            return ChatCompletionChunk(id=request_id, created=created, model=request.model, choices=[choice])

        n_calls = 0
        try:
            yield sse(chunk(DeltaMessage(role="assistant", content="")))
            async for last in chunks:
                if not (last.text or last.tool_calls or last.finish_reason):
                    continue
                deltas = [_delta_tool_call(n_calls + i, c) for i, c in enumerate(last.tool_calls or [])]
                n_calls += len(deltas)
                delta = DeltaMessage(content=last.text or None, tool_calls=deltas or None)
                yield sse(chunk(delta, last.finish_reason))
            if request.stream_options and request.stream_options.include_usage:
                usage = UsageInfo.of(last.prompt_tokens, last.completion_tokens)
                yield sse(
                    ChatCompletionChunk(
                        id=request_id, created=created, model=request.model, choices=[], usage=usage
                    )
                )
        except EngineError as e:
            log.warning("request %s: %s", request_id, e)
            yield sse(ErrorResponse(error=ErrorInfo(message=f"the model failed: {e}", type="server_error")))
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]  # the client may have left: stop generating
        yield "data: [DONE]\n\n"

    # --- completions (legacy) ------------------------------------------------------------------

    async def completions(self, request: CompletionRequest) -> CompletionResponse | AsyncIterator[str]:
        """Raw text completion on the served model: the prompt goes to the model as it is, with no
        chat template. A response, or for ``stream`` the server-sent events (ending with [DONE])."""
        if request.model in self.profiles:
            raise APIError(
                400,
                f"{request.model!r} is an agent profile, and agents answer chat only: "
                "use POST /v1/chat/completions",
                param="model",
                code="agent_needs_chat",
            )
        if request.model != self.engine.model_id:
            raise self._unknown_model(request.model)
        request_id = random_id("cmpl")
        generation = self._generation(request, request_id, messages=[], prompt=request.prompt_text())
        chunks = await self._start(generation, request.model, "prompt")
        if request.stream:
            return self._stream_completion(request, request_id, chunks)
        parts: list[str] = []
        try:
            async for last in chunks:  # noqa: B007 (the last chunk has the finish reason and usage)
                parts.append(last.text)
        except EngineError as e:
            raise APIError(500, f"the model failed: {e}", type="server_error") from e
        return CompletionResponse(
            id=request_id,
            model=request.model,
            choices=[CompletionChoice(text="".join(parts), finish_reason=_text_finish(last.finish_reason))],
            usage=UsageInfo.of(last.prompt_tokens, last.completion_tokens),
        )

    async def _stream_completion(
        self, request: CompletionRequest, request_id: str, chunks: AsyncIterator[GenerationChunk]
    ) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choices: list[CompletionChoice], usage: UsageInfo | None = None) -> CompletionResponse:
            return CompletionResponse(
                id=request_id, created=created, model=request.model, choices=choices, usage=usage
            )

        try:
            async for last in chunks:
                if last.text or last.finish_reason:
                    finish = _text_finish(last.finish_reason)
                    yield sse(chunk([CompletionChoice(text=last.text, finish_reason=finish)]))
            if request.stream_options and request.stream_options.include_usage:
                yield sse(chunk([], UsageInfo.of(last.prompt_tokens, last.completion_tokens)))
        except EngineError as e:
            log.warning("request %s: %s", request_id, e)
            yield sse(ErrorResponse(error=ErrorInfo(message=f"the model failed: {e}", type="server_error")))
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        yield "data: [DONE]\n\n"

    # --- agents ---------------------------------------------------------------------------------

    async def _chat_agent(
        self, request: ChatCompletionRequest, profile: Profile
    ) -> ChatCompletionResponse | AsyncIterator[str]:
        # The whole conversation: the last user message is the task, the turns before it the
        # history the model sees first (system messages are ignored: the profile owns them).
        try:
            history, task = split_conversation(request.chat_messages())
        except ConversationError as e:
            raise APIError(400, str(e), param=e.param) from e
        params = GenerationParams(
            temperature=0.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=request.stop or None,  # type: ignore[arg-type]
            seed=request.seed,
        )
        if request.max_new_tokens() is not None:
            params.max_tokens = request.max_new_tokens()  # type: ignore[assignment]
        trajectory_id = new_trajectory_id()
        events = self._observed(
            profile.id,
            run_agent(profile, self.engine, self.store, task, params, trajectory_id, history=history),
        )
        if request.stream:
            return stream_agent(request, trajectory_id, events)
        async for event in events:
            if isinstance(event, Trajectory):
                traj = event
        return agent_response(request.model, traj)

    async def _observed(
        self, profile: str, events: AsyncIterator[Step | Trajectory]
    ) -> AsyncIterator[Step | Trajectory]:
        """An agent run's events, counted into the metrics on the way through."""
        try:
            async for event in events:
                if isinstance(event, Trajectory):
                    self.metrics.agent_run(profile, event)
                else:
                    self.metrics.agent_step(profile, event)
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # stops the run if the client left

    # --- feedback and trajectories --------------------------------------------------------------

    def feedback(self, request: FeedbackRequest) -> FeedbackResponse:
        feedback = Feedback(
            request.rating,
            request.comment,
            request.corrected_answer or None,
            corrected_step=request.corrected_step,
            corrected_output=request.corrected_output,
        )
        if request.corrected_step is not None:
            traj = self.store.get(request.trajectory_id)
            if traj is None:
                raise no_trajectory(request.trajectory_id, param="trajectory_id")
            if request.corrected_step >= len(traj.steps):
                raise APIError(
                    400,
                    f"corrected_step {request.corrected_step} is past the run's last step "
                    f"(it has {len(traj.steps)}): give the index of the step to correct, from 0",
                    param="corrected_step",
                )
        if not self.store.set_feedback(request.trajectory_id, feedback):
            raise no_trajectory(request.trajectory_id, param="trajectory_id")
        return FeedbackResponse(trajectory_id=request.trajectory_id)

    def decide_writes(self, trajectory_id: str, request: WritesRequest) -> WritesResponse:
        """Apply (approve) or drop (discard) the database changes a run is holding."""
        traj = self.store.get(trajectory_id)
        if traj is None:
            raise no_trajectory(trajectory_id)
        if traj.writes_status != "pending":
            state = traj.writes_status or "none"
            raise APIError(
                409,
                f"trajectory {trajectory_id!r} has no pending database changes (changes: {state})",
                type="invalid_request_error",
                code="no_pending_writes",
            )
        profile = self.profiles.get(traj.profile)
        if profile is None:
            raise APIError(
                409,
                f"the run's profile {traj.profile!r} is not served here; start the server with it to apply its changes",
                type="invalid_request_error",
                code="profile_not_served",
            )
        # The store decides who decides: of two requests, in this replica or any other, one wins.
        if not self.store.claim_writes(trajectory_id):
            raise APIError(
                409,
                f"trajectory {trajectory_id!r}'s database changes are being decided by another request",
                type="invalid_request_error",
                code="no_pending_writes",
            )
        if request.decision == "approve":
            try:
                report = profile.apply_writes(traj.pending_writes, approved_by=request.approved_by)
            except Exception as e:
                # Nothing was applied (the tool rolls back); the run keeps its pending changes.
                self.store.release_writes(trajectory_id)
                raise APIError(
                    409,
                    f"the changes were not applied: {e}",
                    type="invalid_request_error",
                    code="writes_not_applied",
                ) from e
            log.info("trajectory %s: %s applied %s", trajectory_id, request.approved_by, report)
        traj.writes_status = "applied" if request.decision == "approve" else "discarded"
        self.store.save(traj, record_feedback=False)
        return WritesResponse(
            trajectory_id=trajectory_id, writes_status=traj.writes_status, statements=traj.pending_writes
        )


def _check_tool_choice(request: ChatCompletionRequest) -> None:
    # As OpenAI: a tool_choice without tools, or naming a tool not given, is the client's mistake.
    choice = request.tool_choice
    if choice is None:
        return
    if not request.tools:
        raise APIError(400, "tool_choice needs tools: send the tools the model may call", param="tool_choice")
    names = {t.function.name for t in request.tools}
    if isinstance(choice, ChatCompletionNamedToolChoiceParam) and choice.function.name not in names:
        raise APIError(
            400,
            f"tool_choice names {choice.function.name!r}, which is not among the tools ({', '.join(sorted(names))})",
            param="tool_choice",
        )


def _check_tool_messages(request: ChatCompletionRequest) -> None:
    """As OpenAI: each tool message answers a call an earlier assistant message made, and each
    call's arguments are a JSON object (the model's own calls are, and templates render them so)."""
    calls: set[str] = set()
    for i, m in enumerate(request.messages):
        if isinstance(m, ChatCompletionAssistantMessageParam):
            for j, call in enumerate(m.tool_calls or []):
                try:
                    arguments = json.loads(call.function.arguments or "{}")
                except ValueError:
                    arguments = None
                if not isinstance(arguments, dict):
                    raise APIError(
                        400,
                        f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON object, "
                        f"not {call.function.arguments!r}",
                        param=f"messages.{i}.tool_calls.{j}.function.arguments",
                    )
                calls.add(call.id)
        elif isinstance(m, ChatCompletionToolMessageParam) and m.tool_call_id not in calls:
            raise APIError(
                400,
                f"messages[{i}] (role 'tool') answers tool_call_id {m.tool_call_id!r}, which no "
                "earlier assistant message's tool_calls has",
                param=f"messages.{i}.tool_call_id",
            )


def _delta_tool_call(index: int, call: dict[str, Any]) -> DeltaToolCall:
    """A whole tool call (as engines report it) as one streamed piece."""
    function = call.get("function", {})
    return DeltaToolCall(
        index=index,
        id=call.get("id"),
        type="function",
        function=DeltaFunctionCall(name=function.get("name"), arguments=function.get("arguments")),
    )


def _text_finish(reason: str | None) -> Literal["stop", "length"] | None:
    return None if reason is None else "length" if reason == "length" else "stop"


def no_trajectory(trajectory_id: str, param: str | None = None) -> APIError:
    return APIError(
        404,
        f"no trajectory {trajectory_id!r} in the store",
        type="not_found_error",
        param=param,
        code="trajectory_not_found",
    )

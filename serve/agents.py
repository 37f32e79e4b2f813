"""Agents on the server: the agent loop runs in a worker thread and talks to the engine directly.

The loop (``agent/loop.py``) is synchronous and the engine is async, so ``EngineChatModel``
implements the agent's ``ChatModel`` by submitting each generation to the server's event loop and
waiting for it. ``run_agent`` starts a run and yields its steps on the event loop as they happen,
then the finished trajectory, which it has already saved: a run is stored even when the client
went away half-way (the next model call then fails and the run ends with ``StopReason.ERROR``).

A follow-up question runs with the conversation before it (``history``); when the engine says a
prompt no longer fits its context window, the model call fails with ``ContextLengthError``, on
which the loop forgets the oldest earlier exchange and asks again (``agent/loop.py``).

To the client a run is a chat completion: finished, one reply (``agent_response``) whose
``agentlm`` extension holds every step; streamed (``stream_agent``), the run's id first, then a
chunk for each step as it happens, the answer, and why the run stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from agentlm.agent.loop import Agent, AgentConfig
from agentlm.agent.models import Completion, ContextLengthError, GenerationParams, ModelEndpointError
from agentlm.agent.profiles import Profile
from agentlm.agent.trajectory import ChatMessage, Step, StopReason, Trajectory
from agentlm.serve.engines import Engine, EngineError, GenerationRequest, PromptTooLongError
from agentlm.serve.protocol import (
    AgentRun,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionStreamChoice,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    UsageInfo,
    random_id,
    sse,
)
from agentlm.serve.store import TrajectoryStore

log = logging.getLogger(__name__)

CLIENT_GONE = "the client went away before the run finished"


async def complete(engine: Engine, request: GenerationRequest) -> Completion:
    """Drain a generation into one reply (its text and, with tools, its calls)."""
    parts: list[str] = []
    calls: list[dict[str, str]] = []
    prompt_tokens = completion_tokens = 0
    async for chunk in engine.generate(request):
        parts.append(chunk.text)
        for call in chunk.tool_calls or []:
            function = call["function"]
            calls.append({"id": call["id"], "name": function["name"], "arguments": function["arguments"]})
        prompt_tokens, completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
    return Completion("".join(parts), prompt_tokens, completion_tokens, calls)


class EngineChatModel:
    """The agent's ``ChatModel`` over an engine, for use from a thread other than the event loop's."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, cancelled: threading.Event):
        self.model_id = engine.model_id
        self._engine = engine
        self._loop = loop
        self._cancelled = cancelled

    def complete(
        self, messages: list[ChatMessage], params: GenerationParams, tools: list[dict] | None = None
    ) -> Completion:
        if self._cancelled.is_set():
            raise ModelEndpointError(CLIENT_GONE)
        request = GenerationRequest(
            messages=list(messages),
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop or []),
            seed=params.seed,
            tools=tools or None,
        )
        future = asyncio.run_coroutine_threadsafe(complete(self._engine, request), self._loop)
        while True:
            try:
                # Wake up now and then to notice a client that left, and stop generating for it.
                return future.result(timeout=0.2)
            except TimeoutError:
                if self._cancelled.is_set():
                    future.cancel()
                    raise ModelEndpointError(CLIENT_GONE) from None
            except PromptTooLongError as e:
                raise ContextLengthError(f"model {self.model_id!r}: {e}") from e
            except EngineError as e:
                raise ModelEndpointError(f"model {self.model_id!r} failed: {e}") from e


async def run_agent(
    profile: Profile,
    engine: Engine,
    store: TrajectoryStore,
    task: str,
    params: GenerationParams,
    trajectory_id: str,
    history: list[ChatMessage] | None = None,
) -> AsyncIterator[Step | Trajectory]:
    """Run `profile`'s agent on `task`; yields each step, then the saved trajectory.

    `history` is the conversation before `task` as the user saw it (``split_conversation``);
    the trajectory records it in the profile's protocol.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Step | Trajectory | BaseException] = asyncio.Queue()
    cancelled = threading.Event()

    def put(item: Step | Trajectory | BaseException) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            cancelled.set()

    def work() -> None:
        try:
            agent = Agent(
                EngineChatModel(engine, loop, cancelled),
                profile,
                AgentConfig(
                    max_rounds=profile.max_rounds, max_seconds=profile.max_seconds, generation=params
                ),
            )
            stream = agent.stream(task, trajectory_id, history=history)
            while True:
                try:
                    put(next(stream))
                except StopIteration as done:
                    traj: Trajectory = done.value
                    break
            store.save(traj)
            put(traj)
        except Exception as e:
            log.exception("agent run %s failed", trajectory_id)
            put(e)

    threading.Thread(target=work, name=f"agent-{trajectory_id}", daemon=True).start()
    try:
        while True:
            item = await events.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Trajectory):
                return
    finally:
        cancelled.set()


# --- the run as a chat reply ------------------------------------------------------------------

_NO_ANSWER = {  # what the person reads when the agent gave no answer: what happened, what to do
    StopReason.MAX_ROUNDS: "I could not find the answer within my step budget. Try asking more specifically.",
    StopReason.TIME_BUDGET: "I ran out of time before finding the answer. Try a simpler or more specific question.",
    StopReason.INVALID_FORMAT: "I could not work this out: my steps kept going wrong. Please rephrase the question.",
    StopReason.REPEATED_OUTPUT: "I got stuck repeating the same step and stopped. Please rephrase the question.",
    StopReason.CONTEXT_BUDGET: "This conversation is too long for me to continue. Please start a new conversation.",
}


def agent_reply(traj: Trajectory) -> str:
    if traj.stop_reason == StopReason.ANSWER and traj.final_answer is not None:
        return traj.final_answer
    if traj.stop_reason == StopReason.ERROR:
        return f"The run stopped: the model failed ({traj.error})."
    return _NO_ANSWER.get(traj.stop_reason, "The run stopped without an answer.")  # type: ignore[arg-type]


def agent_usage(traj: Trajectory) -> UsageInfo:
    return UsageInfo.of(
        sum(s.prompt_tokens for s in traj.steps), sum(s.completion_tokens for s in traj.steps)
    )


def agent_response(model: str, traj: Trajectory) -> ChatCompletionResponse:
    """A finished run as a chat completion: its answer, its usage, and the run in ``agentlm``."""
    return ChatCompletionResponse(
        id=random_id("chatcmpl"),
        model=model,
        choices=[ChatCompletionResponseChoice(message=ChatCompletionMessage(content=agent_reply(traj)))],
        usage=agent_usage(traj),
        agentlm=AgentRun(
            trajectory_id=traj.id,
            stop_reason=traj.stop_reason,
            steps=traj.steps,
            pending_writes=traj.pending_writes or None,
            history_dropped=traj.history_dropped or None,
        ),
    )


async def stream_agent(
    request: ChatCompletionRequest, trajectory_id: str, events: AsyncIterator[Any]
) -> AsyncIterator[str]:
    request_id, created = random_id("chatcmpl"), int(time.time())

    def chunk(
        delta: DeltaMessage, finish_reason: Any = None, ext: AgentRun | None = None
    ) -> ChatCompletionChunk:
        choice = ChatCompletionStreamChoice(delta=delta, finish_reason=finish_reason)
        return ChatCompletionChunk(
            id=request_id, created=created, model=request.model, choices=[choice], agentlm=ext
        )

    try:
        # The id comes first, so a client can find the run even if it leaves before any step.
        yield sse(
            chunk(DeltaMessage(role="assistant", content=""), ext=AgentRun(trajectory_id=trajectory_id))
        )
        async for event in events:
            if isinstance(event, Trajectory):
                traj = event
            else:
                yield sse(chunk(DeltaMessage(), ext=AgentRun(trajectory_id=trajectory_id, step=event)))
        yield sse(chunk(DeltaMessage(content=agent_reply(traj))))
        final = AgentRun(
            trajectory_id=trajectory_id,
            stop_reason=traj.stop_reason,
            pending_writes=traj.pending_writes or None,
            history_dropped=traj.history_dropped or None,
        )
        yield sse(chunk(DeltaMessage(), "stop", ext=final))
        if request.stream_options and request.stream_options.include_usage:
            yield sse(
                ChatCompletionChunk(
                    id=request_id,
                    created=created,
                    model=request.model,
                    choices=[],
                    usage=agent_usage(traj),
                )
            )
    except Exception as e:
        # Headers are sent: the error can only travel in the stream.
        log.exception("agent run %s failed", trajectory_id)
        yield sse(ErrorResponse(error=ErrorInfo(message=f"the agent run failed: {e}", type="server_error")))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield "data: [DONE]\n\n"

"""Agents on the server: the agent loop runs in a worker thread and talks to the engine directly.

The loop (``agent/loop.py``) is synchronous and the engine is async, so ``EngineChatModel``
implements the agent's ``ChatModel`` by submitting each generation to the server's event loop and
waiting for it. ``run_agent`` starts a run and yields its steps on the event loop as they happen,
then the finished trajectory, which it has already saved: a run is stored even when the client
went away half-way (the next model call then fails and the run ends with ``StopReason.ERROR``).

A follow-up question runs with the conversation before it (``history``); when the engine says a
prompt no longer fits its context window, the model call fails with ``ContextLengthError``, on
which the loop forgets the oldest earlier exchange and asks again (``agent/loop.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from agentlm.agent.loop import Agent, AgentConfig
from agentlm.agent.models import Completion, ContextLengthError, GenerationParams, ModelEndpointError
from agentlm.agent.profiles import Profile
from agentlm.agent.trajectory import ChatMessage, Step, Trajectory
from agentlm.serve.engines import Engine, EngineError, GenerationRequest, PromptTooLongError
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

"""Scripted models for tests: the replies are written by the test, every request is kept.

The model is not what these tests check, so the engine says what the test tells it to and records
the messages it was sent; a test can then assert what the model would have seen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from localhttp import bound_socket, run_asgi

from agentlm.agent.models import Completion
from agentlm.serve.engines import Engine, GenerationChunk, GenerationRequest, PromptTooLongError


class ScriptedModel:
    """An agent ``ChatModel`` that replies (or raises) `replies` in order and keeps every prompt."""

    model_id = "scripted"

    def __init__(self, replies: list[str | Exception] | None = None):
        self.replies = list(replies or [])
        self.seen: list[list[dict]] = []

    def complete(self, messages, params, tools=None) -> Completion:
        self.seen.append(list(messages))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Completion(reply, prompt_tokens=10, completion_tokens=5)


class Gate:
    """A pause in an engine's script: the next reply waits until the test opens the gate, so the
    test can look at a run mid-way (the steps shown so far, the answer not yet).

        gate = Gate()
        engine.script(sql_step, gate, answer)   # step 1 runs; the answer waits for gate.open()
    """

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout  # a test that never opens it fails the run instead of hanging it
        self._opened = threading.Event()

    def open(self) -> None:
        self._opened.set()

    async def wait(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._opened.is_set():  # polled: the server's event loop keeps serving meanwhile
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test did not open the gate within {self.timeout:g} s")
            await asyncio.sleep(0.02)


class ScriptedEngine(Engine):
    """Replies with `replies` in order (waiting at each ``Gate``); refuses prompts longer than
    `context_chars` as too long."""

    def __init__(self, replies: list[str | Gate] | None = None, model_id: str = "scripted"):
        self.model_id = model_id
        self.replies = list(replies or [])
        self.requests: list[GenerationRequest] = []
        self.context_chars: int | None = None

    def script(self, *replies: str | Gate) -> None:
        """Start a new script: these replies, in order, and no requests recorded yet."""
        self.replies = list(replies)
        self.requests = []

    def prompts(self) -> list[list[dict]]:
        """The messages of each request the engine was sent, in order."""
        return [list(r.messages) for r in self.requests]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        size = sum(len(m.get("content") or "") for m in request.messages)
        if self.context_chars is not None and size > self.context_chars:
            raise PromptTooLongError(f"the prompt is {size} characters; the window is {self.context_chars}")
        while isinstance(self.replies[0], Gate):
            await self.replies.pop(0).wait()
        reply = self.replies.pop(0)
        yield GenerationChunk(reply, size // 4, len(reply) // 4 + 1, "stop")

    async def health(self) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def scripted_server(
    store: Path, profiles: tuple[str, ...] = ("hr-assistant",), promotions: Path | None = None
) -> Iterator[tuple[str, ScriptedEngine]]:
    """A real AgentLM server (uvicorn on 127.0.0.1) on a scripted engine: yields its /v1 URL and the engine.

    `promotions` is the promotion history GET /v1/promotions reads (on each request); by default
    the settings' own, in $AGENTLM_HOME."""
    from agentlm.serve.app import create_app
    from agentlm.serve.settings import ServeSettings

    engine = ScriptedEngine()
    extra = {} if promotions is None else {"promotions": promotions}
    app = create_app(ServeSettings(store=store, profiles=list(profiles), **extra), engine=engine)
    sock = bound_socket()
    with run_asgi(app, sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", engine


def hr_opening(*questions: str) -> list[dict]:
    """The HR profile's opening for a conversation of `questions` (instruction with the schema,
    "Ok.", the worked example nearest them)."""
    from agentlm.agent.profiles import load_profile

    profile = load_profile("hr-assistant")
    try:
        return profile.opening_messages(list(questions))
    finally:
        profile.sql_tool.close()  # DuckDB: leave the file to the server's own connections

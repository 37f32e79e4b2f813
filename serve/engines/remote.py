"""The remote engine: forwards generations to any OpenAI-compatible endpoint.

A vLLM server on a GPU machine, ``transformers serve``, or a hosted teacher model: anything that
speaks ``/v1/chat/completions``. Agents then run here, with their tools and store, while the
model runs there.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from agentlm.serve.engines.base import (
    Engine,
    EngineError,
    EngineOverloadedError,
    GenerationChunk,
    GenerationRequest,
    ModelNotFoundError,
    PromptTooLongError,
    is_embedded,
)

if TYPE_CHECKING:
    from agentlm.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class RemoteEngine(Engine):
    """Chat completions from a remote OpenAI-compatible URL, streamed."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        served_model_name: str | None = None,
        timeout: float = 600.0,
    ):

        self.base_url = base_url
        self._api_key, self._timeout = api_key or "EMPTY", timeout
        # One async client per event loop: its pooled connections belong to the loop that made them.
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # The remote model id; without one, use the first (usually only) model the endpoint serves.
        self.remote_model = model or self._first_remote_model(api_key or "EMPTY", timeout)
        self.model_id = served_model_name or self.remote_model

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> RemoteEngine:
        if not settings.remote_url:
            raise ModelNotFoundError(
                "the remote engine needs remote_url: the OpenAI-compatible URL to forward to"
            )
        model = None if is_embedded(settings.model) else settings.model
        return cls(settings.remote_url, model, settings.remote_api_key, settings.served_model_name)

    def _first_remote_model(self, api_key: str, timeout: float) -> str:
        import openai

        try:
            with openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=min(timeout, 30.0)) as client:
                models = client.models.list().data
        except openai.OpenAIError as e:
            raise ModelNotFoundError(f"could not list the models at {self.base_url}: {e}") from e
        if not models:
            raise ModelNotFoundError(f"{self.base_url} serves no models")
        return models[0].id

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        import openai

        params = {
            "model": self.remote_model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop or None,
            "seed": request.seed,
        }
        # Unset fields stay out of the body: some OpenAI-compatible servers reject nulls.
        common = {k: v for k, v in params.items() if v is not None}
        common |= {"stream": True, "stream_options": {"include_usage": True}}
        try:
            if request.prompt is not None:  # /v1/completions: the raw prompt, no chat template
                stream = await self._client().completions.create(prompt=request.prompt, **common)
            else:
                tools = {"tools": request.tools} if request.tools else {}
                if request.tools and request.tool_choice is not None:
                    tools["tool_choice"] = request.tool_choice
                if request.tools and request.parallel_tool_calls is not None:
                    tools["parallel_tool_calls"] = request.parallel_tool_calls
                stream = await self._client().chat.completions.create(
                    messages=request.messages,  # type: ignore[arg-type]
                    **common,
                    **tools,
                )
        except openai.RateLimitError as e:
            raise EngineOverloadedError(f"{self.base_url} is overloaded: {e}") from e
        except openai.BadRequestError as e:
            if "context" in str(e).lower():
                raise PromptTooLongError(str(e)) from e
            raise EngineError(f"{self.base_url} rejected the request: {e}") from e
        except openai.OpenAIError as e:
            raise EngineError(f"{self.base_url} failed: {e}") from e

        prompt_tokens = completion_tokens = 0
        finish = None
        calls: dict[int, dict] = {}  # streamed tool calls, assembled by index
        try:
            async for chunk in stream:
                if chunk.usage is not None:  # the last chunk, with include_usage
                    prompt_tokens, completion_tokens = (
                        chunk.usage.prompt_tokens,
                        chunk.usage.completion_tokens,
                    )
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                text = choice.text if request.prompt is not None else choice.delta.content
                for delta in getattr(getattr(choice, "delta", None), "tool_calls", None) or []:
                    # The first fragment of a call has its id and name; later ones add arguments.
                    call = calls.setdefault(
                        delta.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                    )
                    call["id"] = delta.id or call["id"]
                    if delta.function is not None:
                        call["function"]["name"] += delta.function.name or ""
                        call["function"]["arguments"] += delta.function.arguments or ""
                if text:
                    completion_tokens += 1  # an estimate until the usage chunk arrives
                    yield GenerationChunk(text, prompt_tokens, completion_tokens)
        except openai.OpenAIError as e:
            raise EngineError(f"{self.base_url} failed mid-stream: {e}") from e
        finally:
            await stream.close()  # closing the connection tells the remote server to stop
        if calls:
            tool_calls = [calls[i] for i in sorted(calls)]
            for call in tool_calls:  # clients answer a call by its id: never leave one empty
                call["id"] = call["id"] or f"call_{uuid.uuid4().hex[:24]}"
            yield GenerationChunk("", prompt_tokens, completion_tokens, "tool_calls", tool_calls=tool_calls)
            return
        yield GenerationChunk(
            "", prompt_tokens, completion_tokens, "length" if finish == "length" else "stop"
        )

    async def health(self) -> None:
        import openai

        try:
            await self._client().models.list()
        except openai.OpenAIError as e:
            raise EngineError(f"{self.base_url} is not reachable: {e}") from e

    def _client(self):
        import asyncio

        import openai

        key = asyncio.get_running_loop()
        if key not in self._clients:
            self._clients[key] = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, timeout=self._timeout
            )
        return self._clients[key]

    def close(self) -> None:
        # The clients' connections close with their event loops (and the process); nothing to await here.
        self._clients.clear()

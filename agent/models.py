"""What the agent talks to: anything that turns chat messages into a reply.

``OpenAIChatModel`` speaks to any OpenAI-compatible endpoint (AgentLM's own server, vLLM, a hosted
teacher) with the official ``openai`` client. The server passes its engine in directly through the
same small interface, so server-side agents skip an HTTP round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from agentlm.agent.trajectory import ChatMessage


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Tool-calling protocol: [{"id", "name", "arguments" (a JSON string)}], in the model's order.
    tool_calls: list[dict[str, str]] = field(default_factory=list)


@dataclass
class GenerationParams:
    # Greedy by default: AgentBench decoded greedily, and agents should be reproducible.
    max_tokens: int = 384
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None


class ChatModel(Protocol):
    model_id: str

    def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        """The model's reply; `tools` (OpenAI function specs) only in the tool-calling protocol."""
        ...


class ModelEndpointError(RuntimeError):
    """The model endpoint failed (unreachable, error status, timeout)."""


class ContextLengthError(ModelEndpointError):
    """The conversation no longer fits the model's context window."""


class OpenAIChatModel:
    """A model behind any OpenAI-compatible /v1/chat/completions endpoint."""

    def __init__(self, model_id: str, base_url: str, api_key: str = "EMPTY", timeout: float = 600.0):
        import openai

        self.model_id = model_id
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)

    def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        import openai

        extra: dict[str, Any] = {"tools": tools} if tools else {}
        try:
            response = self._client.chat.completions.create(
                model=self.model_id,
                messages=messages,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=params.stop,
                seed=params.seed,
                **extra,
            )
        except openai.BadRequestError as e:
            if "context" in str(e).lower() and ("length" in str(e).lower() or "window" in str(e).lower()):
                raise ContextLengthError(f"model {self.model_id!r}: {e}") from e
            raise ModelEndpointError(f"model {self.model_id!r} failed: {e}") from e
        except openai.OpenAIError as e:
            raise ModelEndpointError(f"model {self.model_id!r} failed: {e}") from e
        usage = response.usage
        message = response.choices[0].message
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments or "{}"}
            for c in (message.tool_calls or [])
            if c.type == "function"
        ]
        return Completion(
            text=message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            tool_calls=calls,
        )

"""The engine interface: what the server needs from anything that generates text.

Serving code depends on this abstract class only, so it runs the same over the embedded CPU
engine, a remote OpenAI-compatible endpoint, or a vLLM server it starts. An engine takes chat
messages and sampling parameters and streams text deltas with running token counts; converting a
request into its own parameters (a prompt, a sampler) is the engine's business.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from agentlm.agent.trajectory import ChatMessage

FinishReason = Literal["stop", "length", "tool_calls"]

EMBEDDED = "embedded"  # model spec of the shipped default: AgentLM's tune of Gemma 3 270M
EMBEDDED_BASE = "embedded-base"  # model spec of the untuned Gemma 3 270M base it is applied to


def is_embedded(spec: str) -> bool:
    """Whether a model spec names one of the embedded models (served by the embedded engine)."""
    return spec in (EMBEDDED, EMBEDDED_BASE)


class EngineError(RuntimeError):
    """The engine could not serve a request (it failed, or is shutting down)."""


class ModelNotFoundError(EngineError):
    """The model to serve does not exist where the settings point."""


class PromptTooLongError(EngineError):
    """The prompt leaves no room for a reply in the model's context window."""


class EngineOverloadedError(EngineError):
    """Too many requests are waiting; the client should retry later (HTTP 429)."""


class UnsupportedFeatureError(EngineError):
    """The request asks for something this engine cannot do (e.g. tools with a chat template that
    cannot render them)."""


class InvalidToolSchemaError(EngineError):
    """A tool's parameters schema cannot be used to constrain its calls (HTTP 400 on ``tools``)."""


@dataclass
class GenerationRequest:
    messages: list[ChatMessage]
    max_tokens: int | None = None  # None: until a stop, or the context window is full
    temperature: float = 1.0  # 0 decodes greedily
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    request_id: str = ""  # for logs
    # /v1/completions: raw text used as it is (no chat template); `messages` is then [].
    prompt: str | None = None
    # OpenAI tool calling: the tools (OpenAI specs), tool_choice ("auto", "none", "required" or
    # {"type": "function", "function": {"name"}}; None: "auto" with tools) and parallel_tool_calls
    # (False: at most one call; None: not said, which is True).
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


@dataclass
class GenerationChunk:
    text: str  # new text since the previous chunk; may be empty on the last one
    prompt_tokens: int
    completion_tokens: int  # generated so far, including this chunk
    finish_reason: FinishReason | None = None  # set on the last chunk only
    # Tool calls, complete, on the chunk that finishes them: [{"id", "type": "function", "function": {...}}]
    tool_calls: list[dict[str, Any]] | None = None


class Engine(ABC):
    """Generates chat replies for one model."""

    model_id: str  # the id clients pass as `model`

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the reply; the last chunk has a finish_reason. Closing the iterator cancels.

        Implementations are async generators (``async def generate(...)`` with ``yield``).
        """

    @abstractmethod
    async def health(self) -> None:
        """Raise EngineError when the engine cannot serve."""

    @abstractmethod
    def close(self) -> None:
        """Release the model and any workers."""

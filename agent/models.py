"""What the agent talks to: anything that turns chat messages into a reply.

``OpenAIChatModel`` speaks to any OpenAI-compatible endpoint (AgentLM's own server, vLLM, a hosted
teacher) with the official ``openai`` client. The server passes its engine in directly through the
same small interface, so server-side agents skip an HTTP round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agentlm.agent.trajectory import ChatMessage


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


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

    def complete(self, messages: list[ChatMessage], params: GenerationParams) -> Completion: ...


class ModelEndpointError(RuntimeError):
    """The model endpoint failed (unreachable, error status, timeout)."""


class OpenAIChatModel:
    """A model behind any OpenAI-compatible /v1/chat/completions endpoint."""

    def __init__(self, model_id: str, base_url: str, api_key: str = "EMPTY", timeout: float = 600.0):
        import openai

        self.model_id = model_id
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)

    def complete(self, messages: list[ChatMessage], params: GenerationParams) -> Completion:
        import openai

        try:
            response = self._client.chat.completions.create(
                model=self.model_id,
                messages=messages,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=params.stop,
                seed=params.seed,
            )
        except openai.OpenAIError as e:
            raise ModelEndpointError(f"model {self.model_id!r} failed: {e}") from e
        usage = response.usage
        return Completion(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

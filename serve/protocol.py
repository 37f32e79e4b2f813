"""The API's request and response shapes: pydantic models only, in OpenAI's field order.

Fields OpenAI defines keep its names, defaults and order; AgentLM's additions are marked
"extension" and live under one ``agentlm`` field, so plain OpenAI clients ignore them.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class OpenAIBaseModel(BaseModel):
    # Accept fields we do not implement (clients send many), but say which ones were ignored.
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_ignored_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            log.warning("%s: ignoring unsupported fields %s", type(self).__name__, sorted(self.model_extra))
        return self


# --- errors -----------------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    message: str
    type: str  # "invalid_request_error", "not_found_error", "authentication_error", "server_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# --- models ------------------------------------------------------------------------------------


class AgentInfo(BaseModel):
    """Extension: what an agent profile is for, so a UI can describe it."""

    title: str
    description: str
    examples: list[str] = Field(default_factory=list)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "agentlm"  # "agentlm-agent" for agent profiles
    agent: AgentInfo | None = None  # extension: set on agent profiles


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- chat completions --------------------------------------------------------------------------


class TextContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatCompletionMessageParam(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(OpenAIBaseModel):
    messages: list[ChatCompletionMessageParam] = Field(min_length=1)
    model: str
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)  # deprecated by OpenAI; still widely sent
    n: int | None = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)  # None: 1.0 (or greedy for agents)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else stop or []
        return [s for s in stops if s]

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages as plain role/content dicts ("developer" is OpenAI's new name for system)."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> UsageInfo:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatCompletionResponseChoice(BaseModel):
    index: int = 0
    message: ChatMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = "stop"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo
    # extension, agent runs only: {"trajectory_id", "stop_reason", "steps": [step dicts]}
    agentlm: dict[str, Any] | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionStreamChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None
    # extension, agent runs only: {"trajectory_id", "step": step dict} per step, then
    # {"trajectory_id", "stop_reason"[, "pending_writes"]} on the chunk that finishes the run
    agentlm: dict[str, Any] | None = None


# --- feedback and trajectories (AgentLM's own endpoints) ---------------------------------------


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trajectory_id: str = Field(min_length=1)
    rating: Literal[1, -1]  # thumbs up or down; "up" and "down" are accepted too
    comment: str = ""
    corrected_answer: str | None = None  # a better final answer, used when exporting for training

    @field_validator("rating", mode="before")
    @classmethod
    def _thumbs(cls, rating: Any) -> Any:
        return {"up": 1, "down": -1}.get(rating, rating) if isinstance(rating, str) else rating


class FeedbackResponse(BaseModel):
    trajectory_id: str
    status: Literal["recorded"] = "recorded"


class WritesRequest(BaseModel):
    """A person's decision on the database changes an agent run is holding (scratch-copy writes)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "discard"]
    approved_by: str = Field(default="api", min_length=1, max_length=200)  # who decided, for the log


class WritesResponse(BaseModel):
    trajectory_id: str
    writes_status: Literal["applied", "discarded"]
    statements: list[str]


class TrajectoryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]  # Trajectory.to_dict() each

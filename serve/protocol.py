"""The API's request and response shapes: pydantic models only, in OpenAI's field order.

Fields OpenAI defines keep its names, defaults and order; AgentLM's additions are marked
"extension" and live under one ``agentlm`` field, so plain OpenAI clients ignore them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentlm.agent.trajectory import ChatMessage as EngineMessage
from agentlm.agent.trajectory import StepRecord, StopReason, Trajectory

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


_ERROR_DESCRIPTIONS = {
    400: "Invalid request: a field is malformed or unsupported (`error.param` names it)",
    401: "Missing or wrong API key (only when the server has one set)",
    404: "Unknown model, trajectory or route",
    409: "The request conflicts with the resource's state",
    413: "The request body is larger than the server's max_body_bytes",
    429: "The engine's queue is full; retry after the Retry-After header's seconds",
    500: "Internal error; the server log has the details under the request id in the message",
    503: "The engine cannot serve",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all in the OpenAI error shape."""
    responses: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[s]} for s in statuses
    }
    if 429 in responses:
        responses[429]["headers"] = {
            "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    return responses


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model: str  # the served model id


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


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON, as the model wrote it (it may not parse)


class ChatCompletionMessageToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class _MessageParam(BaseModel):
    content: str | list[TextContentPart] | None = None  # OpenAI requires it but for assistants; "" here
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionSystemMessageParam(_MessageParam):
    role: Literal["system"]


class ChatCompletionDeveloperMessageParam(_MessageParam):
    role: Literal["developer"]  # OpenAI's newer name for system


class ChatCompletionUserMessageParam(_MessageParam):
    role: Literal["user"]


class ChatCompletionAssistantMessageParam(_MessageParam):
    role: Literal["assistant"]
    tool_calls: list[ChatCompletionMessageToolCall] | None = None


class ChatCompletionToolMessageParam(_MessageParam):
    role: Literal["tool"]
    tool_call_id: str  # the call this message is the result of


# One model per role, told apart by `role`, so the OpenAPI document says which fields each role
# takes (a tool message needs tool_call_id) and a wrong role is one clear error.
ChatCompletionMessageParam = Annotated[
    ChatCompletionSystemMessageParam
    | ChatCompletionDeveloperMessageParam
    | ChatCompletionUserMessageParam
    | ChatCompletionAssistantMessageParam
    | ChatCompletionToolMessageParam,
    Field(discriminator="role"),
]
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: bool | None = None


class ChatCompletionToolParam(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class ChatCompletionNamedToolChoiceParam(BaseModel):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(OpenAIBaseModel):
    """What chat and text completion requests share: the model, sampling, stops, streaming."""

    model: str
    n: int | None = Field(default=1, ge=1, le=1, description="only 1 is supported")
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # int64, as OpenAI
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)  # None: 1.0 (greedy for agents)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else stop or []
        return [s for s in stops if s]


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatCompletionMessageParam] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)  # deprecated by OpenAI; still widely sent
    parallel_tool_calls: bool | None = None
    tool_choice: Literal["none", "auto", "required"] | ChatCompletionNamedToolChoiceParam | None = None
    tools: list[ChatCompletionToolParam] | None = None

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat_messages(self) -> list[EngineMessage]:
        """The messages as the engines take them ("developer" is OpenAI's new name for system)."""
        out: list[EngineMessage] = []
        for m in self.messages:
            role = "system" if m.role == "developer" else m.role
            message: EngineMessage = {"role": role, "content": m.text()}  # type: ignore[typeddict-item]
            if isinstance(m, ChatCompletionAssistantMessageParam) and m.tool_calls:
                message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            if isinstance(m, ChatCompletionToolMessageParam):
                message["tool_call_id"] = m.tool_call_id
            out.append(message)
        return out

    def engine_tools(self) -> tuple[list[dict[str, Any]] | None, str | dict[str, Any] | None]:
        """``tools`` and ``tool_choice`` as the engines take them (plain JSON)."""
        tools = [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None
        choice = self.tool_choice
        return tools, choice.model_dump() if isinstance(choice, BaseModel) else choice


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


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None


class ChatCompletionResponseChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    logprobs: None = None
    finish_reason: FinishReason | None = "stop"


def _absent(value: Any) -> bool:
    return value is None


class AgentRun(BaseModel):
    """AgentLM's extension of a reply from an agent profile (``agentlm``). A reply carries the run's
    id, why it stopped and every step; a stream carries the id on its first chunk, one step on each
    chunk after, and why the run stopped on the chunk that finishes it. Absent fields are left out."""

    trajectory_id: str  # GET /v1/trajectories/{id}; POST /v1/feedback
    stop_reason: StopReason | None = Field(default=None, exclude_if=_absent)
    steps: list[StepRecord] | None = Field(default=None, exclude_if=_absent)
    step: StepRecord | None = Field(default=None, exclude_if=_absent)
    # Database changes held for a person's approval (POST /v1/trajectories/{id}/writes).
    pending_writes: list[str] | None = Field(default=None, exclude_if=_absent)
    # Earlier exchanges of the conversation left out to fit the model's context.
    history_dropped: int | None = Field(default=None, exclude_if=_absent)


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo
    agentlm: AgentRun | None = None  # extension, agent runs only


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int  # which call of the reply this piece belongs to
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatCompletionStreamChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None
    agentlm: AgentRun | None = None  # extension, agent runs only


# --- completions (legacy text completions) ----------------------------------------------------


class CompletionRequest(SamplingRequest):
    """``/v1/completions``: raw text in, text out, no chat template; one prompt, one choice."""

    # A list holds exactly one prompt; token-id prompts are not supported.
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: Literal[False] | None = Field(default=False, description="only false is supported")
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default is 16; null: until a stop

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None  # None on streamed chunks before the last


class CompletionResponse(BaseModel):
    """A whole completion, and (with ``usage`` only on the last) each streamed chunk."""

    id: str = Field(default_factory=lambda: random_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


# --- feedback and trajectories (AgentLM's own endpoints) ---------------------------------------


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trajectory_id: str = Field(min_length=1)
    rating: Literal[1, -1]  # thumbs up or down; "up" and "down" are accepted too
    comment: str = ""
    corrected_answer: str | None = None  # a better final answer, used when exporting for training
    # Or the reply the model should have given at one step (its index in the run's steps), in the
    # run's protocol: training prefers it over the model's reply there.
    corrected_step: int | None = Field(default=None, ge=0)
    corrected_output: str | None = None

    @model_validator(mode="after")
    def _step_and_output(self) -> FeedbackRequest:
        if (self.corrected_step is None) != (not self.corrected_output):
            raise ValueError(
                "corrected_step and corrected_output go together: the index of the step to correct "
                "and the reply the model should have given there"
            )
        if self.corrected_step is not None and self.corrected_answer:
            raise ValueError("correct the final answer (corrected_answer) or one step, not both")
        return self

    @field_validator("trajectory_id", "comment", "corrected_answer", "corrected_output")
    @classmethod
    def _no_nul(cls, text: str | None) -> str | None:
        if text and "\x00" in text:  # PostgreSQL's text cannot hold it; no reader wants it
            raise ValueError("must not contain NUL characters (\\u0000)")
        return text

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
    data: list[Trajectory]
    total: int = 0  # matching trajectories, all pages together
    has_more: bool = False


class DayStats(BaseModel):
    """One model's runs on one day (UTC)."""

    day: str  # YYYY-MM-DD
    model: str
    runs: int
    answered: int  # stop_reason "answer"
    thumbs_up: int  # by the latest feedback
    thumbs_down: int
    mean_steps: float  # steps recorded: actions and the answer
    mean_seconds: float  # wall-clock duration


class RunPoint(BaseModel):
    """One run, for per-run charts (steps and latency)."""

    id: str
    created_at: float
    model: str
    profile: str
    steps: int
    duration_seconds: float


class TrajectoryStats(BaseModel):
    """Aggregates of the trajectories a filter matches (``GET /v1/trajectories/stats``)."""

    object: Literal["trajectory.stats"] = "trajectory.stats"
    total: int  # matching runs
    days: list[DayStats]  # by day, then model
    stop_reasons: dict[str, int]  # runs by why they ended ("unknown": not recorded)
    points: list[RunPoint]  # the latest matching runs, oldest first


class EvalScores(BaseModel):
    """One checkpoint's eval row (train/eval.py's ``EvalRow``, field for field)."""

    model: str
    tasks: dict[str, float] = {}  # task file stem -> agent success rate
    mc_accuracy: float | None = None
    perplexity: float | None = None
    by_type: dict[str, dict[str, float]] = {}


class PromotionRecord(BaseModel):
    """One promotion decision (train/promote.py), as its history file keeps it."""

    decided_at: float  # unix seconds
    stage: str  # the training that made the candidate: "sft" or "preference"
    checkpoint: str | None = None  # the candidate
    link: str | None = None  # the link a promotion repoints
    promote: bool
    reason: str
    checks: list[str] = []  # one line per metric compared
    previous: EvalScores | None = None  # the checkpoint in service, when there was one
    new: EvalScores | None = None  # the candidate's row
    tolerance: float | None = None  # MC accuracy points the candidate could lose
    ppl_tolerance: float | None = None  # perplexity percent it could gain


class PromotionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PromotionRecord]  # newest first


# --- on the wire -------------------------------------------------------------------------------


def wire(payload: BaseModel) -> dict[str, Any]:
    """A response as JSON: OpenAI's fields without those left unset (null), AgentLM's ``agentlm``
    extension as its own model writes it (its steps keep their null fields, as stored)."""
    data = payload.model_dump(mode="json", exclude_none=True)
    ext = getattr(payload, "agentlm", None)
    if ext is not None:
        data["agentlm"] = ext.model_dump(mode="json")
    return data


def sse(payload: Any) -> str:
    data = (
        json.dumps(wire(payload), ensure_ascii=False, separators=(",", ":"))
        if isinstance(payload, BaseModel)
        else payload
    )
    return f"data: {data}\n\n"

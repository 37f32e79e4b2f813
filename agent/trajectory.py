"""The trajectory: the one record of an agent run that every part of AgentLM shares.

The agent produces it step by step, the server stores it, the UI shows it and attaches feedback,
data/ turns it into training conversations. It is defined here, once; everything else imports it.

A trajectory is the opening prompt (instruction, the assistant's "Ok.", a 1-shot example), the
earlier turns of the user's conversation when the run continues one (``history``), the user's task,
then a list of steps. Each step renders itself as the chat messages the model saw, so
``Trajectory.messages()`` is exactly the conversation to send for the next round.

A multi-turn conversation is one trajectory per user question. Each carries the turns before it
as ``history``, already in the run's protocol (an earlier answer is written as the protocol's
answer reply, ``actions.answer_reply``), so the record alone says what the model saw and
training data can show those turns as context without learning from them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12


class ChatMessage(TypedDict, total=False):
    """One OpenAI-style chat message (``tool_calls``/``tool_call_id`` only in the tool-calling protocol)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str


class StopReason(StrEnum):
    """Why an agent run ended."""

    ANSWER = "answer"  # the model gave a final answer
    MAX_ROUNDS = "max_rounds"  # the profile's round budget ran out
    REPEATED_OUTPUT = "repeated_output"  # the same reply several times in a row
    INVALID_FORMAT = "invalid_format"  # too many replies that fit no action format
    CONTEXT_BUDGET = "context_budget"  # the conversation outgrew the model's context budget
    TIME_BUDGET = "time_budget"  # the run's wall-clock budget ran out
    ERROR = "error"  # the model endpoint failed; see Trajectory.error


class StepError(StrEnum):
    """What went wrong in a step; the run goes on either way."""

    INVALID_FORMAT = "invalid_format"  # the reply fit no action format; the observation says how to
    TOOL_ERROR = "tool_error"  # the tool failed or refused; the observation is its error


@dataclass
class ToolCall:
    """An action the model asked for: a tool name and its argument.

    In the text protocols `input` is the tool's single text argument (the SQL, the bash code). In
    the OpenAI tool-calling protocol it is the JSON arguments string and `id` is the call's id.
    """

    name: str
    input: str
    id: str | None = None


class RepairRecord(TypedDict):
    """A malformed action line the agent replaced by the closest valid one (``actions.Repair``)."""

    original: str
    repaired: str
    bleu: float


@dataclass
class ActionStep:
    """One round in which the model acted (or failed to) and got an observation back."""

    index: int
    model_output: str  # the model's raw reply
    thought: str
    tool_call: ToolCall | None  # None when the reply fit no action format
    observation: str  # what the model sees next: tool output, or a hint about the format
    error: StepError | None = None
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    repair: RepairRecord | None = None  # a malformed action line fixed by BLEU
    kind: Literal["action"] = "action"

    def messages(self) -> list[ChatMessage]:
        call = self.tool_call
        if call is not None and call.id is not None:  # the OpenAI tool-calling protocol
            function = {"name": call.name, "arguments": call.input}
            return [
                {
                    "role": "assistant",
                    "content": self.model_output,
                    "tool_calls": [{"id": call.id, "type": "function", "function": function}],
                },
                {"role": "tool", "tool_call_id": call.id, "content": self.observation},
            ]
        return [
            {"role": "assistant", "content": self.model_output},
            {"role": "user", "content": self.observation},
        ]


@dataclass
class FinalAnswerStep:
    """The round in which the model committed to its answer."""

    index: int
    model_output: str
    thought: str
    answer: str | None  # None: the model finished without an answer (AgentBench OS "Act: finish")
    model_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    repair: RepairRecord | None = None
    kind: Literal["answer"] = "answer"

    def messages(self) -> list[ChatMessage]:
        return [{"role": "assistant", "content": self.model_output}]


Step = ActionStep | FinalAnswerStep
# The same for pydantic models and the API's schema: a step is told by its `kind`.
StepRecord = Annotated[ActionStep | FinalAnswerStep, Field(discriminator="kind")]


@dataclass
class Feedback:
    """What a user thought of a run: thumbs up (+1) or down (-1), a comment, and a correction.

    A correction is what the run should have said: a better final answer (`corrected_answer`), or
    the reply the model should have given at one step (`corrected_step`, its index, and
    `corrected_output`, the whole reply in the run's protocol, e.g. a better SQL action). Training
    uses it as the preferred reply over the model's own (data/preferences.py) and in place of it
    (data/export.py).
    """

    rating: Literal[1, -1]
    comment: str = ""
    corrected_answer: str | None = None
    created_at: float = field(default_factory=time.time)
    corrected_step: int | None = None
    corrected_output: str | None = None

    @property
    def corrected(self) -> bool:
        return bool(self.corrected_answer) or self.corrected_step is not None


def new_trajectory_id() -> str:
    return f"traj-{uuid.uuid4().hex[:24]}"


@dataclass
class Trajectory:
    """Everything about one agent run, from the prompt the model saw to the user's feedback."""

    task: str
    profile: str  # agent profile id, e.g. "hr-assistant"
    model: str  # the model id the agent talked to
    prompt: list[ChatMessage]  # the opening messages, before the task
    # The earlier turns of the conversation this run continues (the user's questions and the
    # answers they were shown), in the protocol's form: what the model saw between prompt and task.
    history: list[ChatMessage] = field(default_factory=list)
    protocol: str = "db"  # "db" | "os" (AgentBench text protocols) | "tools" (OpenAI tool calling)
    tools: list[dict[str, Any]] = field(default_factory=list)  # tool-calling protocol: the specs offered
    steps: list[StepRecord] = field(default_factory=list)
    final_answer: str | None = None
    stop_reason: StopReason | None = None
    error: str | None = None  # set when stop_reason is ERROR
    reward: float | None = None  # from an environment's evaluation, when there is one
    feedback: Feedback | None = None
    id: str = field(default_factory=new_trajectory_id)
    created_at: float = field(default_factory=time.time)
    duration_seconds: float = 0.0
    # Writes the agent made to its scratch copy of the database, waiting for a person's approval.
    pending_writes: list[str] = field(default_factory=list)
    writes_status: Literal["pending", "applied", "discarded"] | None = None
    # The trajectory of the conversation's previous turn, when the caller knows it.
    previous_id: str | None = None
    # The oldest earlier exchanges (a question and its answer each) left out of `history` because
    # the conversation outgrew the model's context; `history` is what the model still saw.
    history_dropped: int = 0

    def messages(self) -> list[ChatMessage]:
        """The conversation as the model saw it: prompt, earlier turns, task, then each step."""
        out: list[ChatMessage] = [*self.prompt, *self.history, {"role": "user", "content": self.task}]
        for step in self.steps:
            out.extend(step.messages())
        return out

    @property
    def invalid_actions(self) -> int:
        return sum(1 for s in self.steps if isinstance(s, ActionStep) and s.error == StepError.INVALID_FORMAT)

    @property
    def succeeded(self) -> bool:
        """A run is worth learning from when an environment rewarded it or a user liked it."""
        if self.feedback is not None:
            return self.feedback.rating > 0
        return self.reward is not None and self.reward >= 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """A trajectory from ``to_dict``; records stored before a field existed get its default."""
        d = dict(d)
        d["steps"] = [step_from_dict(s) for s in d.get("steps", [])]
        if d.get("stop_reason") is not None:
            d["stop_reason"] = StopReason(d["stop_reason"])
        if d.get("feedback") is not None:
            d["feedback"] = Feedback(**d["feedback"])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> Trajectory:
        return cls.from_dict(json.loads(s))


def step_from_dict(d: dict[str, Any]) -> Step:
    d = dict(d)
    kind = d.get("kind")
    if kind == "action":
        if d.get("tool_call") is not None:
            d["tool_call"] = ToolCall(**d["tool_call"])
        if d.get("error") is not None:
            d["error"] = StepError(d["error"])
        return ActionStep(**d)
    if kind == "answer":
        return FinalAnswerStep(**d)
    raise ValueError(f"unknown step kind {kind!r}: expected 'action' or 'answer'")

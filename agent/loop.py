"""The ReAct loop: ask the model, parse its action, run the tool, show it the observation, repeat.

``Agent.stream(task)`` is a generator that yields each step as it happens and returns the finished
``Trajectory``; ``Agent.run(task)`` just drains it. Mistakes the model can recover from (a reply
in the wrong format, a failing tool call) become observations and the loop goes on; a failing
model endpoint ends the run with ``StopReason.ERROR``. Nothing prints here: the UI, the server
and logging subscribe to the steps.

An agent runs a ``Setup``: the protocol, the opening prompt, the earlier turns of the
conversation (``history``, for a follow-up question), the task and the tools. Profiles
(``profiles.py``) and task environments (``envs/``) both produce one. Three protocols:

- ``db`` and ``os``: AgentBench's text protocols (``actions.py``), which AgentLM checkpoints speak;
- ``tools``: OpenAI tool calling (``tools`` / ``tool_calls``) for models that support it; a reply
  without a tool call is the final answer.

Tool output is data, never instructions: it reaches the model only as the observation of a step.

A long conversation is cut from its start, as chat products do, rather than refused: when the
prompt would exceed ``max_context_tokens``, or the endpoint says it no longer fits its context,
the oldest earlier exchange (a question and its answer) is forgotten and the round tried again;
only a run with no earlier turns left stops with ``StopReason.CONTEXT_BUDGET``. The trajectory
keeps what the model last saw and counts what it forgot (``history_dropped``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from agentlm.agent.actions import PARSERS, FinalAnswer, InvalidAction, ParsedReply, closest_action
from agentlm.agent.models import (
    ChatModel,
    Completion,
    ContextLengthError,
    GenerationParams,
    ModelEndpointError,
)
from agentlm.agent.trajectory import (
    ActionStep,
    ChatMessage,
    FinalAnswerStep,
    Step,
    StepError,
    StopReason,
    ToolCall,
    Trajectory,
)

log = logging.getLogger(__name__)

Protocol = Literal["db", "os", "tools"]


@dataclass
class Setup:
    """Everything the agent loop needs to run one conversation."""

    protocol: Protocol
    prompt: list[ChatMessage]  # the opening messages before the task (instruction, "Ok.", 1-shot)
    task: str  # the user's turn that states the task
    tools: dict[str, BaseTool]
    max_rounds: int
    name: str = "agent"  # the profile id or environment task id the trajectory is filed under
    metadata: dict[str, Any] = field(default_factory=dict)
    owned_tools: list[BaseTool] = field(default_factory=list)  # made for this run; closed after it
    # The conversation's earlier turns in the protocol's form, between prompt and task
    # (``profiles.history_messages``); empty for a conversation's first question.
    history: list[ChatMessage] = field(default_factory=list)

    def close(self) -> None:
        for tool in self.owned_tools:
            close = getattr(tool, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing must not hide the run's own outcome
                    log.exception("closing tool %s failed", tool.name)


@dataclass
class AgentConfig:
    max_rounds: int | None = None  # None: the setup's (AgentBench: 15 for DB, 8 for OS)
    max_invalid: int = 3  # consecutive replies that fit no format before giving up
    max_repeats: int = 3  # the same reply this many times in a row is a repetitive failure
    # Forget the oldest earlier exchanges, then stop, before a round whose prompt would exceed this.
    max_context_tokens: int | None = None
    max_seconds: float | None = None  # wall-clock budget for the whole run
    generation: GenerationParams | None = None


def estimate_tokens(messages: list[ChatMessage]) -> int:
    """A cheap upper-side estimate (about 3 characters per token) for budgeting, not billing."""
    return sum(len(m.get("content") or "") + 8 for m in messages) // 3


def forget_oldest_exchange(traj: Trajectory) -> bool:
    """Drop the oldest earlier exchange (a user turn and what followed it) from `traj.history`.

    Returns False when there is none left to drop. The newest turns are what a follow-up question
    refers to, so they are the last to go; the run's own steps are never dropped.
    """
    history = traj.history
    if not history:
        return False
    end = next((i for i in range(1, len(history)) if history[i]["role"] == "user"), len(history))
    del history[:end]
    traj.history_dropped += 1
    log.info(
        "trajectory %s: the conversation outgrew the context; forgot its oldest exchange (%d so far)",
        traj.id,
        traj.history_dropped,
    )
    return True


class Agent:
    """Runs a setup (or a profile, for each task) with one model."""

    def __init__(self, model: ChatModel, source: Any, config: AgentConfig | None = None):
        """`source` is a ``Setup``, or anything with ``setup(task) -> Setup`` (a ``Profile``)."""
        self.model = model
        self.source = source
        self.config = config or AgentConfig()

    def run(
        self,
        task: str | None = None,
        trajectory_id: str | None = None,
        *,
        history: list[ChatMessage] | None = None,
        previous_id: str | None = None,
    ) -> Trajectory:
        stream = self.stream(task, trajectory_id, history=history, previous_id=previous_id)
        while True:
            try:
                next(stream)
            except StopIteration as done:
                return done.value

    def _setup(self, task: str | None, history: list[ChatMessage] | None) -> Setup:
        if isinstance(self.source, Setup):
            if task is not None and task != self.source.task:
                raise ValueError("this agent runs a fixed setup; pass no task or the setup's own")
            if history:
                raise ValueError("this agent runs a fixed setup; give its history to the Setup")
            return self.source
        if task is None:
            raise ValueError("give the task to run")
        # Only a continued conversation needs a source that takes history (a Profile does).
        return self.source.setup(task, history=history) if history else self.source.setup(task)

    def stream(
        self,
        task: str | None = None,
        trajectory_id: str | None = None,
        *,
        history: list[ChatMessage] | None = None,
        previous_id: str | None = None,
    ) -> Generator[Step, None, Trajectory]:
        """Yield each step as it happens; return the finished trajectory.

        `trajectory_id` lets a caller (the server) name the run before it starts. `history` is
        the conversation before `task` as the user saw it (questions and the answers shown); the
        source writes it in its protocol (``Profile.setup``). `previous_id` names the trajectory
        of the previous turn, when the caller knows it.
        """
        setup = self._setup(task, history)
        cfg = self.config
        max_rounds = cfg.max_rounds or setup.max_rounds
        params = cfg.generation or GenerationParams()
        traj = Trajectory(
            task=setup.task,
            profile=setup.name,
            model=self.model.model_id,
            prompt=setup.prompt,
            history=list(setup.history),  # a copy: forgetting old turns must not change the setup
            protocol=setup.protocol,
            previous_id=previous_id,
        )
        if trajectory_id:
            traj.id = trajectory_id
        tool_specs = (
            [convert_to_openai_tool(t) for t in setup.tools.values()] if setup.protocol == "tools" else None
        )
        traj.tools = tool_specs or []
        started = time.perf_counter()
        invalid_in_a_row = 0
        budget = cfg.max_context_tokens

        def over_budget() -> bool:
            return budget is not None and estimate_tokens(traj.messages()) + params.max_tokens > budget

        try:
            for index in range(max_rounds):
                if cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds:
                    traj.stop_reason = StopReason.TIME_BUDGET
                    break
                while over_budget() and forget_oldest_exchange(traj):
                    pass
                if over_budget():
                    traj.stop_reason = StopReason.CONTEXT_BUDGET
                    break
                t0 = time.perf_counter()
                try:
                    completion = self._complete(traj, params, tool_specs)
                except ContextLengthError as e:
                    traj.stop_reason, traj.error = StopReason.CONTEXT_BUDGET, str(e)
                    break
                except ModelEndpointError as e:
                    log.warning("trajectory %s: %s", traj.id, e)
                    traj.stop_reason, traj.error = StopReason.ERROR, str(e)
                    break
                model_seconds = time.perf_counter() - t0
                parsed = self._parse(setup, completion)
                reply = completion.text.strip()
                tokens = {
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                }
                repair = vars(parsed.repair) if parsed.repair else None

                if isinstance(parsed.action, FinalAnswer):
                    step: Step = FinalAnswerStep(
                        index,
                        reply,
                        parsed.thought,
                        parsed.action.text,
                        model_seconds=model_seconds,
                        repair=repair,
                        **tokens,
                    )
                    traj.steps.append(step)
                    traj.final_answer, traj.stop_reason = parsed.action.text, StopReason.ANSWER
                    yield step
                    break

                if isinstance(parsed.action, InvalidAction):
                    invalid_in_a_row += 1
                    step = ActionStep(
                        index,
                        reply,
                        parsed.thought,
                        None,
                        parsed.action.hint,
                        error=StepError.INVALID_FORMAT,
                        model_seconds=model_seconds,
                        **tokens,
                    )
                else:
                    invalid_in_a_row = 0
                    call = parsed.action
                    t1 = time.perf_counter()
                    observation, error = self._call_tool(setup, call)
                    step = ActionStep(
                        index,
                        reply,
                        parsed.thought,
                        call,
                        observation,
                        error=error,
                        model_seconds=model_seconds,
                        tool_seconds=time.perf_counter() - t1,
                        repair=repair,
                        **tokens,
                    )
                traj.steps.append(step)
                yield step

                if invalid_in_a_row >= cfg.max_invalid:
                    traj.stop_reason = StopReason.INVALID_FORMAT
                    break
                recent = [_repeat_key(s) for s in traj.steps[-cfg.max_repeats :]]
                if len(recent) == cfg.max_repeats and len(set(recent)) == 1:
                    traj.stop_reason = StopReason.REPEATED_OUTPUT
                    break
            else:
                traj.stop_reason = StopReason.MAX_ROUNDS
        finally:
            traj.duration_seconds = time.perf_counter() - started
            traj.pending_writes = _pending_writes(setup)
            if traj.pending_writes:
                traj.writes_status = "pending"
            setup.close()
        return traj

    def _complete(
        self, traj: Trajectory, params: GenerationParams, tool_specs: list[dict[str, Any]] | None
    ) -> Completion:
        """The model's reply to the conversation so far.

        When the endpoint says the conversation no longer fits its context (its own token count,
        exact where the estimate is not), the oldest earlier exchange is forgotten and the model
        asked again; once no earlier turn is left, the error stands.
        """
        while True:
            try:
                return self.model.complete(traj.messages(), params, tools=tool_specs)
            except ContextLengthError:
                if not forget_oldest_exchange(traj):
                    raise

    def _parse(self, setup: Setup, completion: Completion) -> ParsedReply:
        if setup.protocol != "tools":
            return PARSERS[setup.protocol](completion.text.strip())
        text = completion.text.strip()
        if not completion.tool_calls:
            return ParsedReply(text, FinalAnswer(text))
        # One call per round keeps the trajectory a plain ReAct sequence; extra calls are refused.
        first = completion.tool_calls[0]
        return ParsedReply(text, ToolCall(first["name"], first["arguments"], id=first["id"]))

    def _call_tool(self, setup: Setup, call: ToolCall) -> tuple[str, StepError | None]:
        tool = setup.tools.get(call.name)
        if tool is None:
            names = list(setup.tools)
            hint = ""
            if names:
                closest, score, _ = closest_action(call.name, names, tokenize="char")
                hint = f" Did you mean {closest!r}?" if score >= 30 else ""
            return (
                f"Error: there is no tool {call.name!r}; use one of {', '.join(names)}.{hint}",
                StepError.TOOL_ERROR,
            )
        tool_input: Any = call.input
        if call.id is not None:  # tool calling: the input is a JSON object of arguments
            try:
                tool_input = json.loads(call.input or "{}")
            except json.JSONDecodeError as e:
                return (
                    f"Error: the arguments are not valid JSON ({e.msg}); send a JSON object.",
                    StepError.TOOL_ERROR,
                )
        try:
            observation = str(tool.invoke(tool_input))
        except Exception as e:  # a tool's own failure is the model's observation, not a crash
            log.warning("tool %s failed: %s", call.name, e)
            return f"Error: {type(e).__name__}: {e}", StepError.TOOL_ERROR
        return observation, (StepError.TOOL_ERROR if observation.startswith("Error:") else None)


def _repeat_key(step: Step) -> str:
    call = getattr(step, "tool_call", None)
    return step.model_output + (f"\0{call.name}\0{call.input}" if call else "")


def _pending_writes(setup: Setup) -> list[str]:
    """Statements tools made to scratch copies, waiting for approval (the SQL tool in scratch mode)."""
    pending: list[str] = []
    for tool in setup.tools.values():
        pending.extend(getattr(tool, "pending_writes", None) or [])
    return pending

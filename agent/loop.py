"""The ReAct loop: ask the model, parse its action, run the tool, show it the observation, repeat.

``Agent.stream(task)`` is a generator that yields each step as it happens and returns the finished
``Trajectory``; ``Agent.run(task)`` just drains it. Mistakes the model can recover from (a reply
in the wrong format, a failing SQL statement) become observations and the loop goes on; a failing
model endpoint ends the run with ``StopReason.ERROR``. Nothing prints here: the UI, the server
and logging subscribe to the steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import dataclass

from langchain_core.tools import BaseTool

from agentlm.agent.actions import FinalAnswer, InvalidAction, parse_db_reply
from agentlm.agent.models import ChatModel, GenerationParams, ModelEndpointError
from agentlm.agent.profiles import Profile
from agentlm.agent.trajectory import ActionStep, FinalAnswerStep, Step, StopReason, Trajectory

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    max_rounds: int = 15  # AgentBench's database task allows 15
    max_invalid: int = 3  # consecutive replies that fit no format before giving up
    max_repeats: int = 3  # the same reply this many times in a row is a repetitive failure
    generation: GenerationParams | None = None


class Agent:
    """Runs one profile's tools with one model."""

    def __init__(self, model: ChatModel, profile: Profile, config: AgentConfig | None = None):
        self.model = model
        self.profile = profile
        self.config = config or AgentConfig(max_rounds=profile.max_rounds)
        self.tools: dict[str, BaseTool] = profile.tools()

    def run(self, task: str, trajectory_id: str | None = None) -> Trajectory:
        stream = self.stream(task, trajectory_id)
        while True:
            try:
                next(stream)
            except StopIteration as done:
                return done.value

    def stream(self, task: str, trajectory_id: str | None = None) -> Generator[Step, None, Trajectory]:
        """Yield each step as it happens; return the finished trajectory.

        `trajectory_id` lets a caller (the server) name the run before it starts.
        """
        cfg = self.config
        params = cfg.generation or GenerationParams()
        traj = Trajectory(
            task=task,
            profile=self.profile.id,
            model=self.model.model_id,
            prompt=self.profile.opening_messages(),
        )
        if trajectory_id:
            traj.id = trajectory_id
        started = time.perf_counter()
        invalid_in_a_row = 0
        for index in range(cfg.max_rounds):
            t0 = time.perf_counter()
            try:
                completion = self.model.complete(traj.messages(), params)
            except ModelEndpointError as e:
                log.warning("trajectory %s: %s", traj.id, e)
                traj.stop_reason, traj.error = StopReason.ERROR, str(e)
                break
            model_seconds = time.perf_counter() - t0
            reply = completion.text.strip()
            parsed = parse_db_reply(reply)
            tokens = {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
            }

            if isinstance(parsed.action, FinalAnswer):
                step: Step = FinalAnswerStep(
                    index, reply, parsed.thought, parsed.action.text, model_seconds=model_seconds, **tokens
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
                    error="invalid_format",
                    model_seconds=model_seconds,
                    **tokens,
                )
            else:
                invalid_in_a_row = 0
                call = parsed.action
                t1 = time.perf_counter()
                observation, error = self._call_tool(call.name, call.input)
                step = ActionStep(
                    index,
                    reply,
                    parsed.thought,
                    call,
                    observation,
                    error=error,
                    model_seconds=model_seconds,
                    tool_seconds=time.perf_counter() - t1,
                    **tokens,
                )
            traj.steps.append(step)
            yield step

            if invalid_in_a_row >= cfg.max_invalid:
                traj.stop_reason = StopReason.INVALID_FORMAT
                break
            recent = [s.model_output for s in traj.steps[-cfg.max_repeats :]]
            if len(recent) == cfg.max_repeats and len(set(recent)) == 1:
                traj.stop_reason = StopReason.REPEATED_OUTPUT
                break
        else:
            traj.stop_reason = StopReason.MAX_ROUNDS
        traj.duration_seconds = time.perf_counter() - started
        return traj

    def _call_tool(self, name: str, tool_input: str) -> tuple[str, str | None]:
        tool = self.tools.get(name)
        if tool is None:
            return f"Error: there is no tool {name!r}; use one of {', '.join(self.tools)}.", "tool_error"
        try:
            observation = str(tool.invoke(tool_input))
        except Exception as e:  # a tool's own failure is the model's observation, not a crash
            log.warning("tool %s failed: %s", name, e)
            return f"Error: {type(e).__name__}: {e}", "tool_error"
        return observation, ("tool_error" if observation.startswith("Error:") else None)

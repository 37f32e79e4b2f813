"""Trajectory collection with a teacher over task environments, as AgentTuning built AgentInstruct.

For every task of an environment (AgentBench DB or OS task files), the ReAct agent runs with a
teacher model in the environment's own 1-shot setup; a failed run is retried (3 attempts by
default); malformed actions are repaired by BLEU as the runtime always does; only runs whose
reward reaches the threshold are kept, as AgentInstruct-format conversations (``loss: true`` on
the teacher's own turns). Collection is resumable (tasks already in the output are skipped),
runs tasks in parallel threads, shows a progress bar and counts tokens and repairs.

The teacher is any OpenAI-compatible endpoint (a hosted GPT-4-class model, a vLLM server, the
embedded model), or ``ScriptedTeacher``: it acts out each task's reference solution (its gold SQL,
its example script) with a short thought before each action and answers from what it observed,
so collection works offline. Its trajectories have exactly the same format and pass the same
reward filter; tasks without a reference action (OS tasks that ship only their answer) are skipped.

    python -m agentlm.data.collect --tasks dbbench.jsonl --out db_trajectories.jsonl --teacher scripted
"""

from __future__ import annotations

import ast
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from agentlm.agent.actions import answer_reply, bash_reply, operation_reply
from agentlm.agent.envs import environment_for
from agentlm.agent.envs.base import Environment, EnvTask, Episode
from agentlm.agent.loop import Agent, AgentConfig
from agentlm.agent.models import ChatModel, Completion, GenerationParams, OpenAIChatModel
from agentlm.agent.trajectory import ChatMessage, Trajectory
from agentlm.data.formats import DataFormatError, conversation_from_trajectory
from agentlm.options import invoke, options_from, settings_of

log = logging.getLogger(__name__)

OS_OUTPUT = "The output of the OS:\n\n"


class NoReferenceError(ValueError):
    """The task has no reference action for the scripted teacher to act out."""


class ScriptedTeacher:
    """A teacher that acts out one episode's reference solution in the episode's text protocol."""

    model_id = "scripted-teacher"

    def __init__(self, episode: Episode, protocol: str):
        self.action = episode.reference_action()
        if self.action is None:
            raise NoReferenceError(f"{episode.task.id}: no reference action to act out")
        self.protocol = protocol
        self.kind = str(episode.task.raw.get("type", ["query"])[0])
        self.rounds = 0

    def complete(
        self, messages: list[ChatMessage], params: GenerationParams, tools: list | None = None
    ) -> Completion:
        """Round 1: the reference action; round 2: the answer, from what the action returned."""
        self.rounds += 1
        return Completion(self._act() if self.rounds == 1 else self._answer(messages[-1]["content"]))

    def _act(self) -> str:
        if self.protocol == "os":
            return bash_reply("I will run a script to find this out.", self.action)
        thought = (
            "I need to change the table as asked, so I run one statement that does it."
            if self.kind in ("INSERT", "UPDATE", "DELETE")
            else "I can answer this by querying the table, so I run one SQL statement."
        )
        sql = " ".join(self.action.split())
        return operation_reply(thought, sql)

    def _answer(self, observation: str) -> str:
        if self.protocol == "os":
            output = observation.removeprefix(OS_OUTPUT) if observation.startswith(OS_OUTPUT) else ""
            return answer_reply("os", output.strip(), "The output is the answer.")
        if self.kind in ("INSERT", "UPDATE", "DELETE"):
            return answer_reply("db", "done", "The statement ran, so the table is changed.")
        try:
            rows = ast.literal_eval(observation)
            values = [v for row in rows for v in row]
        except (ValueError, SyntaxError, TypeError):  # the statement failed: no answer to give
            return answer_reply("db", "[]", "The statement failed, so I cannot answer.")
        answer = json.dumps(values if values else ["none"], ensure_ascii=False, default=str)
        return answer_reply("db", answer, "The query returned the answer.")


@dataclass
class CollectReport:
    tasks: int = 0
    skipped_done: int = 0  # already in the output (resumed)
    skipped_unsupported: int = 0  # cannot run here, or no reference for the scripted teacher
    kept: int = 0
    rejected: int = 0  # no attempt reached the reward threshold
    attempts: int = 0
    repaired_steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    reasons: dict[str, str] = field(default_factory=dict)  # task id -> why it was not kept

    def lines(self) -> list[str]:
        return [
            f"{self.kept} kept, {self.rejected} rejected, {self.skipped_unsupported} unsupported, "
            f"{self.skipped_done} already collected, of {self.tasks} tasks ({self.attempts} attempts, "
            f"{self.seconds:.1f} s)",
            f"tokens: {self.prompt_tokens} prompt, {self.completion_tokens} completion; "
            f"steps repaired by BLEU: {self.repaired_steps}",
        ]


TeacherFactory = Callable[[Episode, str], ChatModel]


def collected_ids(out: Path) -> set[str]:
    """Ids already in `out`. A last line cut short by a killed run is removed, so nothing else is lost."""
    if not out.is_file():
        return set()
    ids, good = set(), 0
    with out.open("rb") as f:
        for line in f:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no end of line: the write was cut")
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                if f.read(1):  # a broken line in the middle is not ours to fix
                    raise DataFormatError(
                        f"{out}: a broken record after byte {good}; fix or move the file"
                    ) from None
                log.warning("%s: dropping a partial last record (a run was killed mid-write)", out)
                break
            good += len(line)
    with out.open("r+b") as f:
        f.truncate(good)
    return ids


def scripted_teacher(episode: Episode, protocol: str) -> ChatModel:
    return ScriptedTeacher(episode, protocol)


def endpoint_teacher(model: str, base_url: str, api_key: str = "EMPTY") -> TeacherFactory:
    """A teacher behind an OpenAI-compatible endpoint (one client shared by all episodes)."""
    client = OpenAIChatModel(model, base_url, api_key=api_key)
    return lambda episode, protocol: client


def collect(
    environment: Environment,
    tasks: list[EnvTask],
    out: str | Path,
    teacher: TeacherFactory,
    *,
    attempts: int = 3,
    threshold: float = 1.0,
    workers: int = 1,
    generation: GenerationParams | None = None,
    source: str = "collect",
    progress: bool = True,
) -> CollectReport:
    """Run the teacher on every task; append kept trajectories to `out` (AgentInstruct JSONL)."""
    out = Path(out)
    done = collected_ids(out)
    report = CollectReport(tasks=len(tasks))
    lock = threading.Lock()
    started = time.perf_counter()
    todo = []
    for task in tasks:
        if task.id in done:
            report.skipped_done += 1
        elif task.unsupported:
            report.skipped_unsupported += 1
            report.reasons[task.id] = task.unsupported
        else:
            todo.append(task)

    def one(task: EnvTask) -> None:
        kept: Trajectory | None = None
        why = ""
        for _ in range(attempts):
            try:
                with environment.episode(task) as episode:
                    setup = episode.setup()
                    model = teacher(episode, setup.protocol)
                    traj = Agent(model, setup, AgentConfig(generation=generation)).run()
                    traj.reward = episode.reward(traj.final_answer)
            except NoReferenceError as e:
                with lock:
                    report.skipped_unsupported += 1
                    report.reasons[task.id] = str(e)
                return
            except Exception as e:  # one broken task must not stop the collection
                log.warning("%s: attempt failed: %s", task.id, e)
                why = f"{type(e).__name__}: {e}"
                with lock:
                    report.attempts += 1
                continue
            with lock:
                report.attempts += 1
                report.prompt_tokens += sum(s.prompt_tokens for s in traj.steps)
                report.completion_tokens += sum(s.completion_tokens for s in traj.steps)
                report.repaired_steps += sum(1 for s in traj.steps if s.repair)
            if traj.reward >= threshold:
                kept = traj
                break
            why = f"reward {traj.reward} < {threshold} (stop: {traj.stop_reason})"
        with lock:
            if kept is None:
                report.rejected += 1
                report.reasons[task.id] = why
                return
            conversation = conversation_from_trajectory(kept)
            conversation.id, conversation.source = task.id, source
            record = conversation.to_record()
            record["reward"] = kept.reward
            record["repaired_steps"] = sum(1 for s in kept.steps if s.repair)
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            report.kept += 1

    out.parent.mkdir(parents=True, exist_ok=True)
    run_parallel(one, todo, workers, "collecting" if progress else None)
    report.seconds = time.perf_counter() - started
    return report


def run_parallel(fn: Callable[[Any], Any], items: list[Any], workers: int, progress: str | None) -> None:
    """``fn`` over ``items`` in ``workers`` threads, with a progress bar labelled ``progress`` if given."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=progress, unit="task")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(fn, items):
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()


PROG = "agentlm data collect"


class CollectSettings(BaseModel):
    """What `agentlm data collect` takes: one field an option."""

    model_config = ConfigDict(extra="forbid")

    tasks: str = Field(description="AgentBench DB (JSONL) or OS (JSON) task file.")
    out: str = Field(description="AgentInstruct-format JSONL to append to.")
    env: Literal["db", "os"] | None = Field(
        default=None, description="The task environment (default: from the task file)."
    )
    scripts: Path | None = Field(
        default=None, description="OS tasks: AgentBench's scripts folder (default: beside the file)."
    )
    teacher: str = Field(default="scripted", description="'scripted', or a model id at --base-url.")
    base_url: str | None = Field(
        default=None, validate_default=True, description="The teacher's OpenAI-compatible endpoint."
    )
    api_key: str = Field(default="EMPTY", description="The teacher endpoint's API key.")
    attempts: int = Field(default=3, ge=1, description="Runs of a task until one reaches --threshold.")
    threshold: float = Field(default=1.0, ge=0, le=1, description="The reward (0 to 1) a kept run reaches.")
    workers: int = Field(default=1, ge=1, description="Tasks run at once, in threads.")

    @field_validator("base_url")
    @classmethod
    def _teacher_has_an_endpoint(cls, base_url: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("teacher", "scripted") != "scripted" and not base_url:
            raise PydanticCustomError(
                "needs_base_url", "a model teacher needs --base-url (its OpenAI-compatible endpoint)"
            )
        return base_url


@options_from(CollectSettings, CollectSettings.model_fields)
def run(**options: Any) -> None:
    """Trajectory collection with a teacher over task environments, as AgentTuning built AgentInstruct."""
    settings = settings_of(CollectSettings, options, PROG)
    environment = environment_for(settings.tasks, settings.env, settings.scripts)
    tasks = environment.load(settings.tasks)
    factory = (
        scripted_teacher
        if settings.teacher == "scripted"
        else endpoint_teacher(settings.teacher, settings.base_url or "", settings.api_key)
    )
    report = collect(
        environment,
        tasks,
        settings.out,
        factory,
        attempts=settings.attempts,
        threshold=settings.threshold,
        workers=settings.workers,
        source=f"collect/{environment.name}/{settings.teacher}",
    )
    for line in report.lines():
        print(line)


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, PROG)


if __name__ == "__main__":
    main()

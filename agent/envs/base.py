"""Task environments with rewards: what evaluation runs agents in and what data collection filters by.

An ``Environment`` loads a task file (AgentBench's format for its family) and opens an ``Episode``
per task: a fresh world (a DuckDB copy, a sandboxed shell), the opening conversation and tools the
agent gets, and a ``reward`` that scores the run the way the benchmark does. Episodes are context
managers; closing one removes everything it created.

``reference_answer`` plays the task's own reference solution inside the episode (DB: the gold SQL;
OS: the example script or the gold answer) and returns what that policy would submit, so
``verify`` checks that a task's reference passes its own evaluation, the filter data construction
applies before keeping a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlm.agent.loop import Protocol, Setup

__all__ = ["EnvTask", "Environment", "Episode", "Protocol", "Setup", "TaskFileError"]


class TaskFileError(ValueError):
    """A task file that cannot be read: the message names the file, the task and what is wrong."""


@dataclass
class EnvTask:
    id: str  # "<file stem>-<index>", stable across runs
    description: str
    raw: dict[str, Any]  # the record as the file has it
    unsupported: str | None = None  # why this task cannot run here, when it cannot
    source: Path | None = None  # the task file it was read from (OS: its scripts folder is beside it)


class Episode(ABC):
    """One task being solved in a fresh world."""

    def __init__(self, task: EnvTask):
        self.task = task

    @abstractmethod
    def setup(self) -> Setup: ...

    @abstractmethod
    def reward(self, answer: str | None) -> float:
        """1.0 when the run solved the task, else 0.0. `answer` is the final answer, if any."""

    @abstractmethod
    def reference_answer(self) -> str | None:
        """Play the reference solution in this episode; return the answer it submits."""

    def reference_action(self) -> str | None:
        """The tool input the reference solution runs (the gold SQL, the example script), if any.

        A scripted teacher (``data/collect.py``) acts it out in the agent's protocol.
        """
        return None

    def explain(self, answer: str | None) -> str | None:
        """Why `answer` scored 0 in this episode, in the task's terms, when the episode can say."""
        return None

    def close(self) -> None:  # noqa: B027 - episodes without resources need no cleanup
        pass

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Environment(ABC):
    name: str

    @abstractmethod
    def load(self, path: str | Path) -> list[EnvTask]:
        """Every task in `path`; raises TaskFileError with file, task and field on bad input."""

    @abstractmethod
    def episode(self, task: EnvTask) -> Episode: ...

    def verify(self, tasks: list[EnvTask]) -> Iterator[tuple[EnvTask, float | None, str | None]]:
        """(task, reward of its reference solution, note) for each task; reward None when it cannot run."""
        for task in tasks:
            if task.unsupported:
                yield task, None, task.unsupported
                continue
            try:
                with self.episode(task) as ep:
                    answer = ep.reference_answer()
                    reward = ep.reward(answer)
                    yield task, reward, None if reward >= 1.0 else ep.explain(answer)
            except Exception as e:  # one broken task must not hide the others' results
                yield task, 0.0, f"{type(e).__name__}: {e}"

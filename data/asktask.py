"""What an assistant training task is, and how its questions are phrased.

A task (``Task``) is one question a person would ask, the SQL steps that answer it and how the
answer is worded from the rows the last step returned; ``data/assistant.py`` runs tasks against a
generated world and writes them as conversations. The task kinds live in ``data/assistant_hr.py``
and ``data/assistant_scheduling.py`` (look-ups, joins, writes, refusals) and
``data/assistant_stats.py`` (counts, sums, averages and extremes over leave and the calendar, and
questions about one meeting).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from agentlm.data.worlds import World

Rows = list[tuple]


class AssistantDataError(RuntimeError):
    """A generated task whose SQL or answer does not fit what the database returned."""


@dataclass
class Step:
    thought: str
    sql: str


@dataclass
class Task:
    """One question: its SQL steps and how to word the answer from the last step's rows."""

    profile: str  # "hr-assistant" | "scheduling-assistant"
    question: str
    steps: list[Step]
    final_thought: str
    answer: Callable[[Rows], str]  # from the last statement's rows (no steps: called with [])
    kind: str
    follow_up: Task | None = None  # a next question that needs this one's answer
    meta: dict = field(default_factory=dict)


# --- phrasing ------------------------------------------------------------------------------------


def typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def vary(rng: random.Random, text: str) -> str:
    """The same question the way people type it: sometimes lower case, a typo, no question mark."""
    r = rng.random()
    if r < 0.12:
        text = text.lower()
    elif r < 0.2:
        text = text[0].lower() + text[1:]
    if rng.random() < 0.12:
        text = typo(rng, text)
    if rng.random() < 0.15:
        text = text.rstrip("?")
    if rng.random() < 0.08:
        text = rng.choice(["Hi! ", "Hello, ", "Quick question: ", "Hey, "]) + text
    return text


def pick(rng: random.Random, options: list[str], **slots: object) -> str:
    return rng.choice(options).format(**slots)


@dataclass
class Person:
    id: int
    first: str
    last: str

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


def some_person(world: World, rng: random.Random) -> Person:
    e = rng.choice(world.employees)
    return Person(e[0], e[1], e[2])


def how_named(world: World, rng: random.Random, p: Person) -> tuple[str, str]:
    """(how the question names the person, the WHERE clause on employees e)."""
    firsts = [e[1] for e in world.employees].count(p.first)
    r = rng.random()
    if r < 0.15 and firsts == 1:
        return p.first, f"e.first_name = '{p.first}'"
    if r < 0.3:
        return p.full.lower(), f"e.first_name = '{p.first}' AND e.last_name = '{p.last}'"
    return p.full, f"e.first_name = '{p.first}' AND e.last_name = '{p.last}'"


def number(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.1f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))
    return str(v)

"""Agent profiles: an instruction, tools, a database and a 1-shot example, as a YAML file per assistant.

Each profile is also a model id on the API (``hr-assistant``): a chat completion with that model
runs the agent server-side. Profiles ship in ``agent/profiles/``; a path to a YAML file works too.

``protocol: db`` speaks AgentBench's database protocol (what AgentLM checkpoints were trained on)
with the SQL tool only; ``protocol: tools`` uses OpenAI tool calling and may list more tools:
``sql``, ``bash`` (sandboxed shell), ``fetch`` and ``search`` (web), and any langchain-core tool
by import path (``package.module:attribute``, a ``BaseTool`` instance, class or factory).
``writes: scratch`` lets the SQL tool change a scratch copy of the database; those writes reach
the real database only when a person approves them (``apply_approved_writes``).

A profile answers a conversation, not only one question: ``split_conversation`` checks an
OpenAI-style message list (user, assistant, ..., user) and splits it into the earlier turns and
the new question, and ``history_messages`` writes the earlier turns in the profile's protocol, so
the model sees its earlier answers as the answer replies it was trained to write.
"""

from __future__ import annotations

import importlib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from agentlm.agent.actions import answer_reply
from agentlm.agent.exemplars import ExemplarBank
from agentlm.agent.loop import Setup
from agentlm.agent.tools.sql import SQLTool
from agentlm.agent.trajectory import ChatMessage
from agentlm.paths import home

# Sample databases data/ can build on demand, by name.
SAMPLE_DATABASES = {"hr", "scheduling"}
BUILTIN_TOOLS = ("sql", "bash", "fetch", "search")


class ProfileError(ValueError):
    """A profile that cannot be found or loaded."""


class ConversationError(ValueError):
    """A conversation an agent cannot continue; names the message (its index in the list given)."""

    def __init__(self, message: str, index: int, field: str = "role"):
        super().__init__(message)
        self.index = index
        self.field = field

    @property
    def param(self) -> str:
        """The offending field, as the API names request fields (``messages.3.role``)."""
        return f"messages.{self.index}.{self.field}"


def split_conversation(messages: list[ChatMessage]) -> tuple[list[ChatMessage], str]:
    """The earlier turns and the new question of a conversation sent to an agent.

    The conversation must alternate user and assistant turns, starting and ending with the user:
    the user's questions and the answers the agent gave (the text the user was shown). An agent
    runs its own tools, so tool results and assistant tool calls have no place in it; two user
    turns in a row would leave a question unanswered in the model's view. Each is a
    ``ConversationError`` naming the first message that breaks the shape.

    System (and developer) messages are ignored, not refused: an agent's instructions are its
    profile's (the instruction it was trained on, its ``system_prompt``), a client may not
    replace them, and many OpenAI clients send a system message of their own by default.
    """
    turns = [(i, m) for i, m in enumerate(messages) if m["role"] != "system"]
    if not turns:
        raise ConversationError(
            "an agent needs a task: send it as the last message with role 'user'",
            max(len(messages) - 1, 0),
        )
    for n, (i, m) in enumerate(turns):
        if m["role"] == "tool" or m.get("tool_calls"):
            raise ConversationError(
                f"messages[{i}] is a tool {'result' if m['role'] == 'tool' else 'call'}: an agent runs its "
                "own tools, so its conversation holds only the user's questions and its answers",
                i,
            )
        expected = "user" if n % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise ConversationError(
                f"messages[{i}] has role {m['role']!r} where {expected!r} was expected: an agent "
                "conversation alternates user and assistant turns, starting and ending with the user",
                i,
            )
    last, message = turns[-1]
    if message["role"] != "user":
        raise ConversationError(
            f"the last message must be the user's question (role 'user'); messages[{last}] has role "
            f"{message['role']!r}",
            last,
        )
    task = (message.get("content") or "").strip()
    if not task:
        raise ConversationError(
            f"the last message (messages[{last}]) is empty: it must state the task", last, "content"
        )
    earlier = [{"role": m["role"], "content": m.get("content") or ""} for _, m in turns[:-1]]
    return earlier, task  # type: ignore[return-value]


def history_messages(protocol: str, messages: list[ChatMessage]) -> list[ChatMessage]:
    """Earlier turns of a conversation as the model sees them in `protocol`.

    A user turn stays as it is; an earlier answer (the text the user saw) becomes the protocol's
    answer reply (``actions.answer_reply``: an "Action: Answer" line then "Final Answer: ..." in
    the database protocol), which is what the model would have written to give it. The earlier run's
    intermediate steps are left out: the answer is what the conversation settled on, and
    replaying every query would spend the context the new question needs. System messages are
    ignored (see ``split_conversation``).
    """
    out: list[ChatMessage] = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "user":
            out.append({"role": "user", "content": m.get("content") or ""})
        elif m["role"] == "assistant" and not m.get("tool_calls"):
            out.append({"role": "assistant", "content": answer_reply(protocol, m.get("content") or "")})
        else:
            raise ValueError(
                "an agent conversation holds the user's questions and the agent's answers only, "
                f"not {m['role']!r} turns or tool calls"
            )
    return out


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    title: str
    description: str
    protocol: Literal["db", "tools"] = "db"
    database: str  # a sample database name ("hr", "scheduling") or a path to a DuckDB file
    instruction: str  # the opening user message; {schema} is filled with the tables' DDL
    max_rounds: int = Field(default=15, ge=1, le=100)
    # Wall-clock budget of one answer: past it the run stops and says so in a sentence, instead of a
    # person waiting minutes for a model that cannot finish.
    max_seconds: float | None = Field(default=120.0, gt=0)
    examples: list[str] = Field(default_factory=list)  # questions the UI suggests
    # A worked example shown after "Ok.": user question, assistant action, tool result, ... answer.
    one_shot: list[dict[Literal["role", "content"], str]] = Field(default_factory=list)
    # A bank of worked examples (agent/exemplars.py: a file beside the bundled profiles, or a path):
    # each run shows the one most like its conversation instead of `one_shot`.
    exemplars: str | None = None
    tools: list[str] = Field(default_factory=lambda: ["sql"])  # built-in names or "module:attribute"
    writes: Literal["deny", "scratch"] = "deny"
    # None: the checkpoint's chat template supplies its system prompt (AgentLM's model card prompt);
    # "": an empty system message, which renders no system block (AgentBench's harness sent none).
    system_prompt: str | None = None

    def model_post_init(self, _: object) -> None:
        if self.protocol == "db" and self.tools != ["sql"]:
            raise ValueError("protocol: db speaks SQL only; use protocol: tools for other tools")
        for name in self.tools:
            if name not in BUILTIN_TOOLS and ":" not in name:
                raise ValueError(
                    f"unknown tool {name!r}: use {', '.join(BUILTIN_TOOLS)} or 'module:attribute'"
                )
        roles = [m["role"] for m in self.one_shot]
        if roles and (roles[0] != "user" or roles[-1] != "assistant"):
            raise ValueError(
                "one_shot must start with the user's question and end with the assistant's answer"
            )

    def database_path(self) -> Path:
        if self.database == "hr":
            from agentlm.agent.databases.hr import ensure_hr_database

            return ensure_hr_database(home() / "hr.duckdb")
        if self.database == "scheduling":
            from agentlm.agent.databases.scheduling import ensure_scheduling_database

            return ensure_scheduling_database(home() / "scheduling.duckdb")
        return Path(self.database).expanduser()

    def with_database(self, path: str | Path) -> Profile:
        """The same profile on another DuckDB file.

        Use this rather than ``model_copy(update={"database": ...})``: a copy keeps the original's
        cached ``sql_tool``, which would still point at the old file.
        """
        return Profile.model_validate({**self.model_dump(), "database": str(path)})

    @cached_property
    def exemplar_bank(self) -> ExemplarBank | None:
        if self.exemplars is None:
            return None
        bundled = resources.files("agentlm.agent") / "profiles" / self.exemplars
        path = Path(str(bundled)) if bundled.is_file() else Path(self.exemplars).expanduser()
        if not path.is_file():
            raise ProfileError(
                f"profile {self.id!r} names the exemplar bank {self.exemplars!r}, which is neither a "
                "bundled file nor a path to one; build it with `agentlm data assistant --bank`"
            )
        return ExemplarBank.load(path)

    @cached_property
    def sql_tool(self) -> SQLTool:
        """The shared read-only SQL tool (schema, and runs of profiles that cannot write)."""
        return SQLTool(database=self.database_path(), render=self._sql_render)

    @property
    def _sql_render(self) -> Literal["repr", "table"]:
        # AgentLM checkpoints saw AgentBench's row reprs; tool-calling models read tables better.
        return "repr" if self.protocol == "db" else "table"

    def _build_tool(self, name: str) -> tuple[BaseTool, bool]:
        """A tool for one run, and whether the run owns it (and closes it afterwards)."""
        if name == "sql":
            if self.writes == "deny":
                return self.sql_tool, False
            # Each run writes to its own scratch copy, so runs never see each other's pending writes.
            return SQLTool(database=self.database_path(), writes="scratch", render=self._sql_render), True
        if name == "bash":
            from agentlm.agent.tools.shell import ShellTool

            return ShellTool(), True
        if name in ("fetch", "search"):
            from agentlm.agent.tools import web

            return (web.WebFetchTool() if name == "fetch" else web.WebSearchTool()), False
        return load_tool(name), False

    def setup(self, task: str, history: list[ChatMessage] | None = None) -> Setup:
        """What the agent loop needs to run `task` with this profile; fresh per-run tools.

        `history` is the conversation before `task` as the user saw it (their questions, the
        answers shown); the setup carries it in this profile's protocol (``history_messages``).
        """
        tools: dict[str, BaseTool] = {}
        owned: list[BaseTool] = []
        for name in self.tools:
            tool, own = self._build_tool(name)
            tools[tool.name] = tool
            if own:
                owned.append(tool)
        history = history or []
        questions = [m.get("content") or "" for m in history if m["role"] == "user"] + [task]
        return Setup(
            protocol=self.protocol,
            prompt=self.opening_messages(questions),
            task=task,
            tools=tools,
            max_rounds=self.max_rounds,
            name=self.id,
            owned_tools=owned,
            history=history_messages(self.protocol, history),
        )

    def apply_writes(self, statements: list[str], approved_by: str) -> Any:
        """Make a run's approved changes real: the approval step, called when a person confirms.

        The statements are replayed on a fresh scratch copy first, then the SQL tool applies them
        to the real database in one transaction and checks the result matches the scratch copy
        (rolling back if not). Raises ``ProfileError`` when this profile cannot write.
        """
        if self.writes != "scratch":
            raise ProfileError(f"profile {self.id!r} cannot change its database (writes: {self.writes})")
        # DuckDB opens a file with one configuration per process: the writer needs it to itself.
        self.sql_tool.close()
        tool = SQLTool(database=self.database_path(), writes="scratch", render=self._sql_render)
        try:
            for sql in statements:
                tool.run_rows(sql)
            if list(tool.pending_writes) != list(statements):
                raise ProfileError(
                    "replaying the run's statements did not reproduce its changes; nothing was applied"
                )
            return tool.apply_writes(approved_by=approved_by)
        finally:
            tool.close()

    def opening_messages(self, questions: list[str] | None = None, rank: int = 0) -> list[ChatMessage]:
        """The instruction, the assistant's "Ok." (as AgentBench's database task opens), the 1-shot.

        With an exemplar bank and the conversation's user `questions` (oldest first), the 1-shot is
        the bank's `rank`-th nearest example (0: the nearest; training data varies it); otherwise
        the profile's fixed `one_shot`.
        """
        shot: list[ChatMessage] = [{"role": m["role"], "content": m["content"]} for m in self.one_shot]  # type: ignore[misc]
        if questions and self.exemplar_bank is not None:
            shot = list(self.exemplar_bank.ranked(questions, rank + 1)[-1].messages)
        instruction = self.instruction.replace("{schema}", self.sql_tool.schema()).rstrip()
        system: list[ChatMessage] = (
            [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        )
        return [
            *system,
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": "Ok."},
            *shot,
        ]


def load_tool(spec: str) -> BaseTool:
    """A langchain-core tool from "package.module:attribute" (an instance, a class, or a factory)."""
    module_name, _, attribute = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise ProfileError(f"cannot load tool {spec!r}: {e}") from e
    tool = obj() if callable(obj) and not isinstance(obj, BaseTool) else obj
    if not isinstance(tool, BaseTool):
        raise ProfileError(f"tool {spec!r} is a {type(tool).__name__}, not a langchain-core BaseTool")
    return tool


def _bundled() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("agentlm.agent") / "profiles"
    return {p.name.removesuffix(".yaml"): p for p in folder.iterdir() if p.name.endswith(".yaml")}


def available_profiles() -> list[str]:
    return sorted(_bundled())


def load_profile(name_or_path: str) -> Profile:
    """A bundled profile by id, or a profile YAML file by path."""
    bundled = _bundled()
    if name_or_path in bundled:
        text = bundled[name_or_path].read_text()
    elif Path(name_or_path).is_file():
        text = Path(name_or_path).read_text()
    else:
        raise ProfileError(
            f"no agent profile {name_or_path!r}: use one of {', '.join(available_profiles())} "
            "or the path to a profile YAML file"
        )
    try:
        return Profile.model_validate(yaml.safe_load(text))
    except Exception as e:
        raise ProfileError(f"profile {name_or_path!r} is invalid: {e}") from e

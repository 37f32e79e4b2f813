"""Agent profiles: an instruction, tools, a database and a 1-shot example, as a YAML file per assistant.

Each profile is also a model id on the API (``hr-assistant``): a chat completion with that model
runs the agent server-side. Profiles ship in ``agent/profiles/``; a path to a YAML file works too.

``protocol: db`` speaks AgentBench's database protocol (what AgentLM checkpoints were trained on)
with the SQL tool only; ``protocol: tools`` uses OpenAI tool calling and may list more tools:
``sql``, ``bash`` (sandboxed shell), ``fetch`` and ``search`` (web), and any langchain-core tool
by import path (``package.module:attribute``, a ``BaseTool`` instance, class or factory).
``writes: scratch`` lets the SQL tool change a scratch copy of the database; those writes reach
the real database only when a person approves them (``apply_approved_writes``).
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

from agentlm.agent.loop import Setup
from agentlm.agent.tools.sql import SQLTool
from agentlm.agent.trajectory import ChatMessage
from agentlm.paths import home

# Sample databases data/ can build on demand, by name.
SAMPLE_DATABASES = {"hr", "scheduling"}
BUILTIN_TOOLS = ("sql", "bash", "fetch", "search")


class ProfileError(ValueError):
    """A profile that cannot be found or loaded."""


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    title: str
    description: str
    protocol: Literal["db", "tools"] = "db"
    database: str  # a sample database name ("hr", "scheduling") or a path to a DuckDB file
    instruction: str  # the opening user message; {schema} is filled with the tables' DDL
    max_rounds: int = Field(default=15, ge=1, le=100)
    examples: list[str] = Field(default_factory=list)  # questions the UI suggests
    # A worked example shown after "Ok.": user question, assistant action, tool result, ... answer.
    one_shot: list[dict[Literal["role", "content"], str]] = Field(default_factory=list)
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
            from agentlm.data.hr import ensure_hr_database

            return ensure_hr_database(home() / "hr.duckdb")
        if self.database == "scheduling":
            from agentlm.data.scheduling import ensure_scheduling_database

            return ensure_scheduling_database(home() / "scheduling.duckdb")
        return Path(self.database).expanduser()

    def with_database(self, path: str | Path) -> Profile:
        """The same profile on another DuckDB file.

        Use this rather than ``model_copy(update={"database": ...})``: a copy keeps the original's
        cached ``sql_tool``, which would still point at the old file.
        """
        return Profile.model_validate({**self.model_dump(), "database": str(path)})

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

    def setup(self, task: str) -> Setup:
        """What the agent loop needs to run `task` with this profile; fresh per-run tools."""
        tools: dict[str, BaseTool] = {}
        owned: list[BaseTool] = []
        for name in self.tools:
            tool, own = self._build_tool(name)
            tools[tool.name] = tool
            if own:
                owned.append(tool)
        return Setup(
            protocol=self.protocol,
            prompt=self.opening_messages(),
            task=task,
            tools=tools,
            max_rounds=self.max_rounds,
            name=self.id,
            owned_tools=owned,
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

    def opening_messages(self) -> list[ChatMessage]:
        """The instruction, the assistant's "Ok." (as AgentBench's database task opens), the 1-shot."""
        instruction = self.instruction.replace("{schema}", self.sql_tool.schema()).rstrip()
        system: list[ChatMessage] = (
            [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        )
        return [
            *system,
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": "Ok."},
            *({"role": m["role"], "content": m["content"]} for m in self.one_shot),
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

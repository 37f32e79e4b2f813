"""Agent profiles: a system prompt, tools and a database, as a small YAML file per assistant.

Each profile is also a model id on the API (``hr-assistant``): a chat completion with that model
runs the agent server-side. Profiles ship in ``agent/profiles/``; a path to a YAML file works too.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from agentlm.agent.tools.sql import SQLTool
from agentlm.agent.trajectory import ChatMessage
from agentlm.paths import home

# Sample databases data/ can build on demand, by name.
SAMPLE_DATABASES = {"hr"}


class ProfileError(ValueError):
    """A profile that cannot be found or loaded."""


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    title: str
    description: str
    protocol: Literal["db"] = "db"
    database: str  # a sample database name ("hr") or a path to a DuckDB file
    instruction: str  # the opening user message; {schema} is filled with the tables' DDL
    max_rounds: int = Field(default=15, ge=1, le=100)
    examples: list[str] = Field(default_factory=list)

    def database_path(self) -> Path:
        if self.database in SAMPLE_DATABASES:
            from agentlm.data.hr import ensure_hr_database

            return ensure_hr_database(home() / f"{self.database}.duckdb")
        return Path(self.database).expanduser()

    def with_database(self, path: str | Path) -> Profile:
        """The same profile on another DuckDB file.

        Use this rather than ``model_copy(update={"database": ...})``: a copy keeps the original's
        cached ``sql_tool``, which would still point at the old file.
        """
        return Profile.model_validate({**self.model_dump(), "database": str(path)})

    @cached_property
    def sql_tool(self) -> SQLTool:
        return SQLTool(database=self.database_path())

    def tools(self) -> dict[str, BaseTool]:
        return {self.sql_tool.name: self.sql_tool}

    def opening_messages(self) -> list[ChatMessage]:
        """The instruction, then the assistant's "Ok.", as AgentBench's database task opens."""
        instruction = self.instruction.replace("{schema}", self.sql_tool.schema()).rstrip()
        return [{"role": "user", "content": instruction}, {"role": "assistant", "content": "Ok."}]


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

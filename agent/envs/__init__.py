"""Task environments with rewards: AgentBench's database (``db``) and operating-system (``os``) tasks."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from agentlm.agent.envs.base import Environment, TaskFileError

ENVIRONMENTS = {
    "db": "agentlm.agent.envs.db:DBEnvironment",
    "os": "agentlm.agent.envs.os:OSEnvironment",
}


def get_environment(name: str, **options: Any) -> Environment:
    """The environment `name` ("db", "os"), built with `options` (e.g. the OS scripts' folder)."""
    if name not in ENVIRONMENTS:
        raise ValueError(f"no environment {name!r}: use one of {', '.join(ENVIRONMENTS)}")
    module, _, cls = ENVIRONMENTS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)


def environment_for(
    path: str | Path, name: str | None = None, scripts: str | Path | None = None
) -> Environment:
    """The environment for a task file: `name` or detected from the file; `scripts` is AgentBench's
    scripts folder for OS task files (found beside the file when not given)."""
    name = name or detect_environment(path)
    if scripts is not None and name != "os":
        raise ValueError(f"--scripts is for OS task files; {path} holds {name} tasks")
    return get_environment(name, **({"scripts": scripts} if scripts is not None else {}))


def detect_environment(path: str | Path) -> str:
    """Which environment a task file is for, from its first record (dbbench records have a table)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            text = f.read(1 << 20).lstrip()
    except OSError as e:
        raise TaskFileError(f"{path}: cannot read the task file ({e.strerror})") from e
    try:
        try:  # a JSON list, or one task as a JSON object (AgentBench's os_4 files)
            whole = json.loads(path.read_text(encoding="utf-8"))
            first = whole[0] if isinstance(whole, list) else whole
        except ValueError:  # JSONL: one task a line
            first = json.loads(text.splitlines()[0])
    except (ValueError, IndexError) as e:
        raise TaskFileError(f"{path}: not a JSON list, JSON object or JSONL file of tasks ({e})") from e
    if isinstance(first, dict) and "table" in first:
        return "db"
    if isinstance(first, dict) and "evaluation" in first:
        return "os"
    raise TaskFileError(
        f"{path}: the first task has neither 'table' (AgentBench dbbench) nor 'evaluation' "
        "(AgentBench os_interaction); pass --env db or --env os"
    )

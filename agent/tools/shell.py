"""The ``bash`` tool: a langchain-core tool running bash in a persistent sandboxed shell.

Each ``ShellTool`` sends its commands to one ``ShellSession`` (given, or made on first use): one
bash per task inside bubblewrap, with no network, a read-only system, a non-root uid, rlimits, an
output cap and a wall-clock timeout (``agent/tools/sandbox/``). The tool returns AgentBench's OS
observation text, with a note when the shell was restarted or the output cut; errors come back as
text too.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr

from agentlm.agent.protocols import os_observation
from agentlm.agent.tools.sandbox import (
    SandboxLimits,
    SandboxUnavailableError,
    ShellClosedError,
    ShellSession,
)


class ShellInput(BaseModel):
    command: str = Field(description="bash code to run in the shell")


class ShellTool(BaseTool):
    """Run bash in a persistent sandboxed shell; returns AgentBench's OS observation text."""

    name: str = "bash"
    description: str = (
        "Run bash code in a persistent Linux shell (no network; /root and /home are writable; the "
        "working directory, variables and background jobs carry over between calls) and return its output."
    )
    args_schema: type[BaseModel] = ShellInput
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    unsafe_local: bool | None = None  # None: AGENTLM_SHELL_UNSAFE_LOCAL decides
    session: ShellSession | None = None  # given: shared, and not closed by the tool

    _own: ShellSession | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def shell(self) -> ShellSession:
        """The session commands go to; made on first use when none was given."""
        if self.session is not None:
            return self.session
        with self._lock:
            if self._own is None:
                self._own = ShellSession(self.limits, unsafe_local=self.unsafe_local)
            return self._own

    def _run(self, command: str, run_manager: Any = None) -> str:
        """Errors come back as text, so the agent loop never sees an exception from here."""
        if not command.strip():
            return "Error: the command is empty; put bash code in the ```bash block."
        try:
            result = self.shell().run(command)
        except (ValueError, ShellClosedError, SandboxUnavailableError) as e:
            return f"Error: {e}"
        text = os_observation(result.output.rstrip("\n"))
        return f"{text}\n{result.note}" if result.note else text

    def close(self) -> None:
        with self._lock:
            if self._own is not None:
                self._own.close()
                self._own = None

"""The bubblewrap sandbox the shell tool runs bash in: a host-isolated process tree with rlimits.

- ``config``: ``SandboxLimits``, ``ShellSettings`` (``AGENTLM_SHELL_*``), ``Bind``,
  ``CommandResult`` and the errors;
- ``uids``: a random host uid per sandbox when the host process is root, and finding and killing
  what runs as it;
- ``bwrap``: bubblewrap's command line and the rlimits in front of it;
- ``output``: reading a command's output under a cap, up to a sentinel;
- ``process``: one sandboxed process tree, ``check_sandbox`` and ``run_isolated``;
- ``session``: ``ShellSession``, one persistent bash per task.
"""

from agentlm.agent.tools.sandbox.config import (
    Bind,
    CommandResult,
    SandboxLimits,
    SandboxUnavailableError,
    ShellClosedError,
    ShellSettings,
)
from agentlm.agent.tools.sandbox.process import check_sandbox, run_isolated
from agentlm.agent.tools.sandbox.session import ShellSession
from agentlm.agent.tools.sandbox.uids import processes_of

__all__ = [
    "Bind",
    "CommandResult",
    "SandboxLimits",
    "SandboxUnavailableError",
    "ShellClosedError",
    "ShellSession",
    "ShellSettings",
    "check_sandbox",
    "processes_of",
    "run_isolated",
]

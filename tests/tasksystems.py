"""Whether task systems (agent/tools/tasksystem.py) run here, for ``needs_system`` marks.

The first call builds the OS task image if the machine has none (about a minute, from the Debian
mirror) and starts one system; the answer is kept for the session.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from agentlm.agent.envs.os import OSEnvironment
from agentlm.agent.tools.osimage import ImageBuildError
from agentlm.agent.tools.sandbox import ShellSettings
from agentlm.agent.tools.tasksystem import TaskSystem, TaskSystemError


@functools.cache
def image() -> Path:
    """The OS task image, as the OS environment builds and finds it."""
    return OSEnvironment().image()


@functools.cache
def system_unavailable() -> str | None:
    try:
        TaskSystem(image(), uid_base=ShellSettings().system_uid_base).close()
    except (TaskSystemError, ImageBuildError) as e:
        return str(e)
    return None


@pytest.fixture(scope="session")
def task_systems() -> None:
    """Skips a test where task systems cannot run (not root, no user namespaces, no image)."""
    if reason := system_unavailable():
        pytest.skip(f"task systems cannot run here: {reason}")


needs_system = pytest.mark.usefixtures("task_systems")

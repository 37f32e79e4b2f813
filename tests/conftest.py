"""Shared test setup: tests/ on sys.path (for tiny.py), an isolated AGENTLM_HOME per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def agentlm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep every test's model cache, databases and store out of the user's ~/.agentlm."""
    home = tmp_path_factory.mktemp("agentlm-home")
    old = os.environ.get("AGENTLM_HOME")
    os.environ["AGENTLM_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("AGENTLM_HOME", None)
    else:
        os.environ["AGENTLM_HOME"] = old

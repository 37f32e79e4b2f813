"""Shared test setup: tests/ on sys.path (for tiny.py), an isolated AGENTLM_HOME per session, and a
real PostgreSQL server for the tests marked `postgres`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
from postgres import PostgresServer, postgres_bin, postgres_server  # noqa: E402
from tasksystems import task_systems  # noqa: E402, F401  (the fixture behind `needs_system`)


@pytest.fixture(scope="session", autouse=True)
def agentlm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep every test's model cache, databases and store out of the user's ~/.agentlm."""
    home = tmp_path_factory.mktemp("agentlm-home")
    old = os.environ.get("AGENTLM_HOME")
    # The OS tasks' image is a read-only cache of a few hundred MB: shared with the user's, not rebuilt.
    user_home = Path(old or Path.home() / ".agentlm").expanduser()
    os.environ.setdefault("AGENTLM_OS_IMAGES", str(user_home / "os-images"))
    os.environ["AGENTLM_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("AGENTLM_HOME", None)
    else:
        os.environ["AGENTLM_HOME"] = old


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """One PostgreSQL server for the session (its own cluster in a temporary directory)."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed: apt install postgresql (scripts/setup.sh does)")
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server: a store URL for one test."""
    return postgres.create_database()

"""Fixtures for the browser tests: the real API on a scripted engine, the real UI, and Chromium.

One API and one UI per module (their state is the store and the engine's script, which each test
sets), one browser per session, and a new tab per test: a new Streamlit session, so every test
starts with an empty conversation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedEngine, scripted_server
from webui import CHROMIUM, TIMEOUT_MS, launch_chromium, streamlit_app


@dataclass
class LiveUI:
    url: str  # the Streamlit app: http://127.0.0.1:PORT
    v1: str  # the API it talks to: http://127.0.0.1:PORT/v1
    engine: ScriptedEngine
    promotions: Path  # the promotion history the API serves: absent until a test writes it


@pytest.fixture(scope="module")
def live_ui(tmp_path_factory: pytest.TempPathFactory, agentlm_home) -> Iterator[LiveUI]:
    """The AgentLM API (HR and scheduling assistants on a scripted engine) and the UI on it."""
    tmp = tmp_path_factory.mktemp("live-ui")
    profiles = ("hr-assistant", "scheduling-assistant")
    promotions = tmp / "promotions.jsonl"
    with (
        scripted_server(tmp / "store.sqlite3", profiles=profiles, promotions=promotions) as (v1, engine),
        streamlit_app(v1, tmp / "streamlit.log") as url,
    ):
        yield LiveUI(url, v1, engine, promotions)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """The apt Chromium under Playwright; the tests skip only where either is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install the apt package `chromium` (scripts/setup.sh does)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[test]'")
    expect.set_options(timeout=TIMEOUT_MS)  # not 5 s: a run's reply on a loaded 2-core machine
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def browser_context(chromium: Any) -> Iterator[Any]:
    """One context for every page: its HTTP and code caches make each page after the first load in
    about half the time. Streamlit keeps no state in it (a session is a page's websocket)."""
    context = chromium.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    """A new tab: a new Streamlit session, so an empty conversation."""
    page = browser_context.new_page()
    yield page
    page.close()

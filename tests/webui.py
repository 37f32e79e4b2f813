"""Driving the real Streamlit UI in Chromium with Playwright, for the `browser` tests.

    with streamlit_app(v1_url, log) as url, sync_playwright() as p:
        page = launch_chromium(p).new_page()
        open_app(page, url)
        ask(page, "How many vacation days does Dana Kim have left?")
        reply = wait_for_answer(page, "18 vacation days")
        give_feedback(reply, "👍")

Chromium is the apt package's (/usr/bin/chromium): `playwright install` downloads its own browser,
which cannot work here. Every wait is Playwright's (auto-waiting locators, `expect`) or `eventually`:
a loaded machine makes the UI slower, never the test wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from waiting import eventually

from agentlm.processes import free_port

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "ui" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
# Headless flags for the apt Chromium: no sandbox (tests may run as root), no GPU, and nothing that
# connects anywhere but the pages the test opens.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 30_000  # a run's reply on a loaded 2-core machine: generous, and only spent on failure


@contextmanager
def streamlit_app(api_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`streamlit run ui/app.py` on a free port of 127.0.0.1 talking to `api_url`; yields its URL.

    Its output goes to `log` (quoted when it does not start). It never watches files: edits to ui/
    while the tests run must not rerun the pages under them.
    """
    port = free_port()
    command = [
        *(sys.executable, "-m", "streamlit", "run", str(APP)),
        *("--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1"),
        *("--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"),
        *("--global.developmentMode", "false"),
    ]
    environment = {**os.environ, "AGENTLM_API_URL": api_url, **(env or {})}
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
            try:
                return httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(healthy, timeout=60, interval=0.1, what=f"streamlit to answer at {url} (log: {log})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch_chromium(playwright: Any) -> Any:
    """The apt Chromium, headless, under Playwright."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


# --- the chat page ---------------------------------------------------------------------------------


def chat_input(page: Any) -> Any:
    return page.get_by_placeholder("Ask a question")


def open_app(page: Any, url: str, assistant: str | None = None) -> None:
    """Open the UI (a new Streamlit session: an empty conversation) and wait until it takes questions;
    then pick `assistant` by its title ("Scheduling assistant") if given."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(chat_input(page)).to_be_visible(timeout=TIMEOUT_MS)
    if assistant is not None:
        choose_assistant(page, assistant)


def choose_assistant(page: Any, title: str) -> None:
    """Pick an assistant in the sidebar's "Assistant" box; waits until the page shows it."""
    from playwright.sync_api import expect

    box = page.get_by_role("combobox", name="Assistant", exact=True)
    box.click()
    page.get_by_role("option", name=title, exact=True).click()
    expect(box).to_have_value(title)
    # The page's title: the assistant's, or a plain chat model's id.
    heading = title.removesuffix(" (plain chat)")
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=TIMEOUT_MS)


def messages(page: Any) -> Any:
    """Every chat message on the page, the user's and the assistant's, in order."""
    return page.get_by_test_id("stChatMessage")


def ask(page: Any, question: str) -> None:
    """Type `question` into the chat input and send it; returns once the page shows it."""
    from playwright.sync_api import expect

    box = chat_input(page)
    box.fill(question)
    box.press("Enter")
    expect(messages(page).filter(has_text=question).last).to_be_visible(timeout=TIMEOUT_MS)


def wait_for_answer(page: Any, text: str, timeout_ms: int = TIMEOUT_MS) -> Any:
    """The chat message that shows `text` once the run has finished (its feedback form is there)."""
    from playwright.sync_api import expect

    reply = messages(page).filter(has_text=text).last
    expect(reply.get_by_role("button", name="Send feedback")).to_be_visible(timeout=timeout_ms)
    return reply


def steps_expander(reply: Any) -> Any:
    """A finished reply's "N steps" expander, opened."""
    from playwright.sync_api import expect

    expander = reply.get_by_test_id("stExpander")
    summary = expander.locator("summary")
    if expander.locator("details[open]").count() == 0:
        summary.click()
    expect(expander.locator("details[open]")).to_have_count(1)
    return expander


def give_feedback(reply: Any, rating: str, comment: str = "", corrected: str = "") -> None:
    """Rate a reply (👍 or 👎) with an optional comment and corrected answer; waits for the thanks."""
    from playwright.sync_api import expect

    form = reply.get_by_test_id("stForm")
    form.get_by_text(rating, exact=True).click()
    if comment:
        form.get_by_label("Comment (optional)").fill(comment)
    if corrected:
        form.get_by_label("The right answer, if it was wrong (optional)").fill(corrected)
    form.get_by_role("button", name="Send feedback").click()
    expect(reply.get_by_text("Thanks — your feedback was recorded.")).to_be_visible(timeout=TIMEOUT_MS)


def decide_writes(reply: Any, approve: bool) -> None:
    """Approve or discard the database changes a reply is holding; waits for the UI's confirmation."""
    from playwright.sync_api import expect

    reply.get_by_role("button", name="Approve changes" if approve else "Discard").click()
    done = "Changes saved." if approve else "Changes discarded."
    expect(reply.get_by_text(done)).to_be_visible(timeout=TIMEOUT_MS)


def new_conversation(page: Any) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="New conversation").click()
    expect(messages(page)).to_have_count(0, timeout=TIMEOUT_MS)


# --- the other pages: widgets by key, metrics, tables -----------------------------------------------


def open_page(page: Any, url: str, path: str, title: str) -> None:
    """Open the app's page at `path` ("trajectories") in a new session; waits for its `title`."""
    from playwright.sync_api import expect

    page.goto(f"{url}/{path}")
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=TIMEOUT_MS)


def choose(page: Any, key: str, option: str) -> None:
    """Pick the option that contains `option` in the selectbox with widget key `key`: the box is
    searched for it (long lists only render what is in view), and the page then shows the pick."""
    import re

    from playwright.sync_api import expect

    box = page.locator(f".st-key-{key}").get_by_role("combobox")
    box.click()
    box.fill(option)
    page.get_by_role("option").filter(has_text=option).first.click()
    expect(box).to_have_value(re.compile(re.escape(option)), timeout=TIMEOUT_MS)


def metric(page: Any, label: str) -> Any:
    """The value of the metric labelled `label` (exactly)."""
    label_of = page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    return page.get_by_test_id("stMetric").filter(has=label_of).get_by_test_id("stMetricValue")


def table_cells(table: Any, row: int) -> Any:
    """The cells of a dataframe's body row `row` (0 first), for `expect(...).to_have_text([...])`.

    The grid draws on a canvas and keeps the rows and columns in view in a hidden accessible table,
    which this reads: a column scrolled out of view (a wide table's last) is not there. Dataframes
    carry no `.st-key-` class: find them by position (`get_by_test_id("stDataFrame")`)."""
    return table.locator("table[role=grid] tbody tr").nth(row).locator("td")


def table_rows(table: Any) -> Any:
    """The body rows of a dataframe's hidden accessible table (those in view)."""
    return table.locator("table[role=grid] tbody tr")


# --- the API side ----------------------------------------------------------------------------------


def stored_run(v1: str, task: str) -> dict[str, Any]:
    """The newest stored trajectory whose task is `task` (tests ask unique questions)."""
    listing = httpx.get(f"{v1}/trajectories", params={"limit": 500}).json()["data"]
    runs = [t for t in listing if t["task"] == task]
    assert runs, f"no stored run for {task!r}"
    return max(runs, key=lambda t: t["created_at"])

"""The Trajectories, Review and Models pages in a real browser: Chromium driven by Playwright, on
the real API (scripted engine) and Streamlit app.

Runs are made by asking the agent through the API and rated through it, as the chat page would;
the promotion history is written by train/promote.py into the file the API serves. The AppTest
tests in test_pages.py check the same pages' logic without a browser; these check what a person
sees and does there: the filters, the opened run, the charts drawn, the correction sent, the
history and eval tables.

Other tests of the module may have stored runs too: counts are asked of the API, never assumed.
"""

from __future__ import annotations

import re

import httpx
import pytest
from promotions import promote
from webui import choose, metric, open_page, table_cells, table_rows

from agentlm.train.eval import EvalRow
from agentlm.train.promote import KEEP
from agentlm.ui.client import AgentLMClient

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

pytestmark = pytest.mark.browser

DANA = "SELECT employee_id, title FROM employees WHERE first_name = 'Dana' AND last_name = 'Kim';"


def answer(text: str) -> str:
    return f"I have it.\nAction: Answer\nFinal Answer: {text}"


def op(sql: str, thought: str = "I look it up.") -> str:
    return f"{thought}\nAction: Operation\n```sql\n{sql}\n```"


def agent_run(live_ui, question: str, *replies: str, rating: int | None = None) -> str:
    """Ask the HR assistant `question` through the API with the model scripted to `replies`, rate
    the run if `rating` is given (no correction); the stored run's id."""
    live_ui.engine.script(*replies)
    client = AgentLMClient(live_ui.v1)
    events = list(client.stream_agent("hr-assistant", question))  # to the end: the run is stored
    run_id = next(e.trajectory_id for e in events if e.trajectory_id)
    if rating is not None:
        client.send_feedback(run_id, rating, "rated by the test")
    return run_id


def count(v1: str, **filters: str) -> int:
    """How many stored runs match `filters` (GET /v1/trajectories's)."""
    reply = httpx.get(f"{v1}/trajectories", params={**filters, "limit": 1})
    reply.raise_for_status()
    return reply.json()["total"]


def test_the_trajectory_browser_filters_by_feedback_opens_a_run_and_draws_charts(live_ui, page) -> None:
    # The disliked run repeats its SQL until the loop stops it: three steps, stopped repeated_output.
    disliked_task, liked_task = "Dana Kim's title, for the trajectory browser?", "Is the browser test liked?"
    disliked = agent_run(live_ui, disliked_task, *[op(DANA)] * 3, rating=-1)
    agent_run(live_ui, liked_task, answer("Yes."), rating=1)
    total, thumbs_down = count(live_ui.v1), count(live_ui.v1, rating="-1")
    assert 0 < thumbs_down < total

    open_page(page, live_ui.url, "trajectories", "Trajectories")
    expect(metric(page, "Runs")).to_have_text(str(total))
    choose(page, "traj-feedback", "👎")
    expect(metric(page, "Runs")).to_have_text(str(thumbs_down))
    expect(metric(page, "👍 Thumbs up")).to_have_text("0")
    expect(metric(page, "👎 Thumbs down")).to_have_text(str(thumbs_down))
    table = page.get_by_test_id("stDataFrame")  # dataframes carry no key class: the page's only one
    expect(table_rows(table)).to_have_count(thumbs_down)
    # (The grid keeps only the columns in view in its hidden table: the ID is off to the right.)
    expect(table).to_contain_text(disliked_task)
    expect(table).not_to_contain_text(liked_task)

    choose(page, "traj-run", disliked)
    for step in ("Step 1", "Step 2", "Step 3"):
        expect(page.get_by_text(step, exact=True)).to_be_visible()
    expect(page.get_by_text("Step 4", exact=True)).to_have_count(0)
    expect(page.locator("code").filter(has_text=DANA)).to_have_count(3)  # each step's SQL
    expect(page.get_by_text(f"{disliked} · ")).to_contain_text("stopped: repeated_output")

    page.get_by_role("tab", name="Charts").click()
    charts = page.get_by_test_id("stVegaLiteChart")
    # Success and thumbs per day, steps and seconds per run, runs per stop reason: each drawn.
    expect(charts).to_have_count(5)
    expect(charts.locator("svg.marks")).to_have_count(5)
    expect(charts.last).to_contain_text("repeated_output")  # the stop reasons of the 👎 runs


def test_a_reviewer_corrects_a_step_and_a_final_answer(live_ui, page) -> None:
    wrong_sql = "SELECT title FROM employees WHERE last_name = 'Kim';"
    wrong_step = op(wrong_sql, "I look up Kim.")
    step_run = agent_run(
        live_ui, "What is Dana Kim's title, reviewer?", wrong_step, answer("An Engineer."), rating=-1
    )
    answer_run = agent_run(live_ui, "How old is the review queue?", answer("Ten years."), rating=-1)
    waiting = count(live_ui.v1, rating="-1", corrected="false")
    assert waiting >= 2

    open_page(page, live_ui.url, "review", "Review")
    expect(metric(page, "Runs waiting for review")).to_have_text(str(waiting))

    # A step: its reply comes prefilled, the reviewer rewrites it.
    choose(page, "review-run", step_run)
    choose(page, f"review-target-{step_run}", "Step 1 — sql: ")
    reply = page.get_by_label("Reply the model should have given")
    expect(reply).to_have_value(wrong_step)
    better = op(DANA, "I look her up by her whole name.")
    reply.fill(better)
    page.get_by_label("Comment (optional)").fill("Match the first name too.")
    page.get_by_role("button", name="Send correction").click()
    expect(page.get_by_text(f"Correction recorded for {step_run}.")).to_be_visible()
    expect(metric(page, "Runs waiting for review")).to_have_text(str(waiting - 1))
    feedback = httpx.get(f"{live_ui.v1}/trajectories/{step_run}").json()["feedback"]
    assert feedback["rating"] == -1 and feedback["comment"] == "Match the first name too."
    assert feedback["corrected_step"] == 0 and feedback["corrected_output"] == better
    assert feedback["corrected_answer"] is None

    # The final answer: the first choice of "What to correct".
    choose(page, "review-run", answer_run)
    target = page.locator(f".st-key-review-target-{answer_run}").get_by_role("combobox")
    expect(target).to_have_value("The final answer: Ten years.")
    corrected = page.get_by_label("Corrected final answer")
    expect(corrected).to_have_value("Ten years.")
    corrected.fill("The queue is new: a few minutes.")
    page.get_by_role("button", name="Send correction").click()
    expect(page.get_by_text(f"Correction recorded for {answer_run}.")).to_be_visible()
    expect(metric(page, "Runs waiting for review")).to_have_text(str(waiting - 2))
    feedback = httpx.get(f"{live_ui.v1}/trajectories/{answer_run}").json()["feedback"]
    assert feedback["rating"] == -1 and feedback["corrected_answer"] == "The queue is new: a few minutes."
    assert feedback["corrected_step"] is None


def test_the_models_page_shows_each_promotion_and_its_eval(live_ui, page, tmp_path) -> None:
    history = live_ui.promotions  # the API reads it on each request
    history.unlink(missing_ok=True)
    try:
        open_page(page, live_ui.url, "models", "Models")
        expect(page.get_by_test_id("stAlert")).to_contain_text("No promotion decisions yet")
        expect(page.get_by_test_id("stDataFrame")).to_have_count(0)

        sft = EvalRow("runs/sft-1", {"heldout": 0.5}, mc_accuracy=0.4125, perplexity=12.34)
        preference = EvalRow("runs/pref-1", {"heldout": 0.25}, mc_accuracy=0.43, perplexity=11.87)
        assert promote(tmp_path, history, [sft], "--stage", "sft", "--checkpoint", "runs/sft-1") == 0
        kept = promote(
            tmp_path, history, [sft, preference], "--stage", "preference", "--checkpoint", "runs/pref-1"
        )
        assert kept == KEEP  # worse on agent success

        page.reload()
        expect(page.get_by_role("heading", name="Promotion history")).to_be_visible()
        tables = page.get_by_test_id("stDataFrame")  # dataframes carry no key class: by position
        expect(tables).to_have_count(2)
        table = tables.first
        expect(table_rows(table)).to_have_count(2)
        day = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        worse = "worse on mean agent success (heldout)"
        expect(table_cells(table, 0)).to_have_text([day, "preference", "runs/pref-1", "kept previous", worse])
        first = "no previous checkpoint to compare with"
        expect(table_cells(table, 1)).to_have_text([day, "sft", "runs/sft-1", "promoted", first])

        # The newest candidate is open: the eval rows its decision compared.
        scores = tables.last
        expect(table_cells(scores, 0)).to_have_text(["previous", "runs/sft-1", "0.5", "0.4125", "12.34"])
        expect(table_cells(scores, 1)).to_have_text(["new", "runs/pref-1", "0.25", "0.43", "11.87"])
        expect(page.get_by_text(f"kept previous: {worse}")).to_be_visible()

        choose(page, "models-candidate", "sft · runs/sft-1 (promoted)")
        expect(table_rows(scores)).to_have_count(1)  # the first candidate had nothing to compare with
        expect(table_cells(scores, 0)).to_have_text(["new", "runs/sft-1", "0.5", "0.4125", "12.34"])
        expect(page.get_by_text(f"promoted: {first}")).to_be_visible()
        expect(page.get_by_role("heading", name="Metrics over candidates")).to_be_visible()
    finally:
        history.unlink(missing_ok=True)

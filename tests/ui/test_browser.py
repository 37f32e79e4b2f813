"""The UI in a real browser: Chromium (apt) driven by Playwright, on the real API and Streamlit app.

The model is scripted (tests/scripted.py): what is under test is what a person sees and does in
the browser, and what reaches the server (the prompts the engine got, the stored runs, the
calendar). The AppTest tests beside this one check the app's logic without a browser.
"""

from __future__ import annotations

import httpx
import pytest
from scripted import Gate, hr_opening
from webui import (
    TIMEOUT_MS,
    ask,
    choose_assistant,
    decide_writes,
    free_port,
    give_feedback,
    messages,
    new_conversation,
    open_app,
    steps_expander,
    stored_run,
    wait_for_answer,
)

from agentlm.agent.profiles import load_profile
from agentlm.agent.tools.sql import SQLTool
from agentlm.ui.client import AgentLMClient

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

pytestmark = pytest.mark.browser


def answer(text: str) -> str:
    return f"I have it.\nAction: Answer\nFinal Answer: {text}"


def op(sql: str, thought: str = "I look it up.") -> str:
    return f"{thought}\nAction: Operation\n```sql\n{sql}\n```"


DANA = "SELECT employee_id, title FROM employees WHERE first_name = 'Dana' AND last_name = 'Kim';"


def test_the_hr_assistant_answers_and_the_run_is_stored(live_ui, page) -> None:
    question = "What is Dana Kim's job title?"
    live_ui.engine.script(op(DANA, "I need the employee."), answer("Dana Kim is a People Partner."))
    open_app(page, live_ui.url)
    expect(page.get_by_role("heading", name="HR assistant")).to_be_visible()
    ask(page, question)
    reply = wait_for_answer(page, "Dana Kim is a People Partner.")
    expect(messages(page)).to_have_count(2)
    expect(messages(page).first).to_contain_text(question)

    run = stored_run(live_ui.v1, question)
    assert run["profile"] == "hr-assistant" and run["stop_reason"] == "answer"
    assert run["final_answer"] == "Dana Kim is a People Partner."
    step = run["steps"][0]
    assert step["tool_call"]["input"] == DANA and "People Partner" in step["observation"]
    expect(reply).to_contain_text("2 steps")


def test_a_follow_up_question_carries_the_conversation(live_ui, page) -> None:
    first, follow_up = "How many vacation days does Dana Kim have left?", "And who is that person's manager?"
    open_app(page, live_ui.url)
    live_ui.engine.script(answer("Dana Kim has 18 vacation days left."))
    ask(page, first)
    wait_for_answer(page, "Dana Kim has 18 vacation days left.")
    live_ui.engine.script(answer("Zoe Kowalski."))
    ask(page, follow_up)
    wait_for_answer(page, "Zoe Kowalski.")

    expect(messages(page)).to_have_count(4)
    # The follow-up went with the first question and the answer the person saw.
    (prompt,) = live_ui.engine.prompts()
    assert prompt == [
        *hr_opening(first, follow_up),
        {"role": "user", "content": first},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: Dana Kim has 18 vacation days left."},
        {"role": "user", "content": follow_up},
    ]
    assert stored_run(live_ui.v1, follow_up)["final_answer"] == "Zoe Kowalski."


def test_a_new_conversation_starts_over(live_ui, page) -> None:
    open_app(page, live_ui.url)
    live_ui.engine.script(answer("Dana Kim works in People."))
    ask(page, "Which team is Dana Kim in?")
    wait_for_answer(page, "Dana Kim works in People.")

    new_conversation(page)
    live_ui.engine.script(answer("10 people work in Sales."))
    ask(page, "How many people work in Sales?")
    wait_for_answer(page, "10 people work in Sales.")
    expect(messages(page)).to_have_count(2)
    expect(page.get_by_text("Dana Kim works in People.")).to_have_count(0)
    (prompt,) = live_ui.engine.prompts()
    assert prompt == [
        *hr_opening("How many people work in Sales?"),
        {"role": "user", "content": "How many people work in Sales?"},
    ]


def test_the_steps_show_while_the_agent_works(live_ui, page) -> None:
    question = "What is Dana Kim's employee id?"
    gate = Gate()  # the answer waits until the test has seen step 1
    live_ui.engine.script(op(DANA, "I need the employee."), gate, answer("Dana Kim's id is on file."))
    open_app(page, live_ui.url)
    try:
        ask(page, question)
        running = messages(page).last
        expect(running.get_by_text("Step 1")).to_be_visible()
        expect(running).to_contain_text("Thought: I need the employee.")
        expect(running).to_contain_text(DANA)  # the SQL...
        expect(running).to_contain_text("People Partner")  # ...and what it returned
        # The run is still going: its status says so, and neither its answer nor its form is there.
        expect(running).to_contain_text("Working…")
        expect(page.get_by_text("Dana Kim's id is on file.")).to_have_count(0)
        expect(page.get_by_role("button", name="Send feedback")).to_have_count(0)
    finally:
        gate.open()
    reply = wait_for_answer(page, "Dana Kim's id is on file.")
    # The finished reply keeps its steps, folded: the SQL and the database's reply, as stored.
    steps = steps_expander(reply)
    expect(steps.locator("summary")).to_contain_text("2 steps")
    observation = stored_run(live_ui.v1, question)["steps"][0]["observation"]
    expect(steps).to_contain_text(DANA)
    expect(steps).to_contain_text(observation)


def test_a_thumbs_down_with_a_correction_is_recorded(live_ui, page) -> None:
    question = "How many sick days has Dana Kim used?"
    live_ui.engine.script(answer("Dana Kim used 30 sick days."))
    open_app(page, live_ui.url)
    ask(page, question)
    reply = wait_for_answer(page, "Dana Kim used 30 sick days.")
    give_feedback(reply, "👎", comment="Far too many.", corrected="Dana Kim used 2 sick days.")
    expect(reply.get_by_role("button", name="Send feedback")).to_have_count(0)

    run = httpx.get(f"{live_ui.v1}/trajectories/{stored_run(live_ui.v1, question)['id']}").json()
    assert run["feedback"]["rating"] == -1
    assert run["feedback"]["comment"] == "Far too many."
    assert run["feedback"]["corrected_answer"] == "Dana Kim used 2 sick days."


def test_a_thumbs_up_is_recorded_once_a_rating_is_picked(live_ui, page) -> None:
    question = "Where is the People team?"
    live_ui.engine.script(answer("The People team is in Berlin."))
    open_app(page, live_ui.url)
    ask(page, question)
    reply = wait_for_answer(page, "The People team is in Berlin.")
    reply.get_by_role("button", name="Send feedback").click()  # no rating yet: nothing is sent
    expect(reply.get_by_text("Pick 👍 or 👎 first.")).to_be_visible()
    assert stored_run(live_ui.v1, question)["feedback"] is None

    give_feedback(reply, "👍")
    feedback = stored_run(live_ui.v1, question)["feedback"]
    assert feedback["rating"] == 1 and feedback["corrected_answer"] is None and feedback["comment"] == ""


# --- the scheduling assistant: bookings wait for the person's approval -----------------------------

MEETING = 901  # apart from the ids other tests book (tests/serve/test_approvals.py: 91)
BOOK = [
    f"INSERT INTO meetings VALUES ({MEETING}, 'Browser test', 6, 21, TIMESTAMP '2026-12-03 09:00', TIMESTAMP '2026-12-03 10:00');",
    f"INSERT INTO meeting_attendees VALUES ({MEETING}, 21), ({MEETING}, 7);",
]
BOOKED = "I booked room 6 for Browser test on 2026-12-03 from 09:00 to 10:00."


def calendar() -> list[tuple]:
    """The booked meeting as the real calendar has it (read with the SQL tool's own configuration)."""
    tool = SQLTool(database=load_profile("scheduling-assistant").database_path())
    try:
        return tool.run_rows(f"SELECT title FROM meetings WHERE meeting_id = {MEETING}")
    finally:
        tool.close()


def book_in_the_browser(live_ui, page, question: str):
    """Ask the scheduling assistant to book the meeting; returns its reply, holding the changes."""
    live_ui.engine.script(
        op("SELECT * FROM free_rooms('2026-12-03 09:00', '2026-12-03 10:00', 2) WHERE room_id = 6;"),
        *(op(sql, "I book it.") for sql in BOOK),
        answer(BOOKED),
    )
    open_app(page, live_ui.url, assistant="Scheduling assistant")
    ask(page, question)
    reply = wait_for_answer(page, BOOKED)
    expect(reply.get_by_text("Nothing is saved until you approve.")).to_be_visible()
    expect(reply).to_contain_text(BOOK[0])
    assert calendar() == []
    assert stored_run(live_ui.v1, question)["writes_status"] == "pending"
    return reply


def cancel_booking(live_ui) -> None:
    """Take the meeting off the real calendar again, through the same approved path."""
    live_ui.engine.script(
        op(f"DELETE FROM meeting_attendees WHERE meeting_id = {MEETING};"),
        op(f"DELETE FROM meetings WHERE meeting_id = {MEETING};"),
        answer("Cancelled."),
    )
    client = AgentLMClient(live_ui.v1)
    events = list(client.stream_agent("scheduling-assistant", f"Cancel meeting {MEETING}."))
    client.decide_writes(next(e.trajectory_id for e in events if e.trajectory_id), "approve")
    assert calendar() == []


def test_approving_a_booking_puts_it_on_the_calendar(live_ui, page) -> None:
    question = "Book room 6 for a Browser test on 2026-12-03 at 9."
    reply = book_in_the_browser(live_ui, page, question)
    try:
        decide_writes(reply, approve=True)
        assert calendar() == [("Browser test",)]
        assert stored_run(live_ui.v1, question)["writes_status"] == "applied"
        expect(reply.get_by_role("button", name="Approve changes")).to_have_count(0)
    finally:
        if calendar():
            cancel_booking(live_ui)


def test_a_discarded_booking_never_lands(live_ui, page) -> None:
    question = "Book room 6 for a Browser test on 2026-12-03 at 9, please."
    reply = book_in_the_browser(live_ui, page, question)
    decide_writes(reply, approve=False)
    assert calendar() == []
    assert stored_run(live_ui.v1, question)["writes_status"] == "discarded"


def test_switching_assistants_keeps_each_conversation(live_ui, page) -> None:
    open_app(page, live_ui.url)
    live_ui.engine.script(answer("Dana Kim is in People."))
    ask(page, "Which team is Dana Kim on?")
    wait_for_answer(page, "Dana Kim is in People.")
    choose_assistant(page, "Scheduling assistant")
    expect(messages(page)).to_have_count(0)
    choose_assistant(page, "HR assistant")
    expect(messages(page).filter(has_text="Dana Kim is in People.")).to_have_count(1)


def test_plain_chat_streams_the_models_reply(live_ui, page) -> None:
    live_ui.engine.script("Hello! How can I help?")
    open_app(page, live_ui.url, assistant="scripted (plain chat)")
    ask(page, "Hi there")
    expect(messages(page).last).to_contain_text("Hello! How can I help?", timeout=TIMEOUT_MS)
    expect(messages(page)).to_have_count(2)
    # A plain model runs no agent: no steps, no stored run to rate.
    expect(page.get_by_test_id("stExpander")).to_have_count(0)
    expect(page.get_by_role("button", name="Send feedback")).to_have_count(0)
    (prompt,) = live_ui.engine.prompts()
    assert prompt[-1] == {"role": "user", "content": "Hi there"}


def test_an_unreachable_api_is_named_with_how_to_start_it(live_ui, page) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    open_app(page, live_ui.url)
    api_url = page.get_by_role("textbox", name="API URL")
    api_url.fill(down)
    api_url.press("Enter")
    error = page.get_by_test_id("stAlert")
    expect(error).to_contain_text(down)
    expect(error).to_contain_text("agentlm serve")
    expect(page.get_by_placeholder("Ask a question")).to_have_count(0)

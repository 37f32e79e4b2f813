"""The approved-write path end to end: a scheduling run books a meeting on a scratch copy, the
calendar stays as it was until a person approves through the API, and only then changes.

The run's decisions come from a scripted model (the tiny test model cannot plan a booking); the
server, the store, the SQL tool, the DuckDB file and the HTTP calls are the real ones.
"""

from __future__ import annotations

import httpx
import pytest

from agentlm.agent.loop import Agent
from agentlm.agent.models import Completion
from agentlm.agent.profiles import load_profile
from agentlm.agent.tools.sql import SQLTool
from agentlm.serve.store import open_store
from agentlm.ui.client import AgentLMClient, APIUnavailableError

BOOK = [
    "INSERT INTO meetings VALUES (91, 'Planning', 6, 21, TIMESTAMP '2026-12-03 09:00', TIMESTAMP '2026-12-03 10:00');",
    "INSERT INTO meeting_attendees VALUES (91, 21), (91, 7);",
]


class Scripted:
    model_id = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)

    def complete(self, messages, params, tools=None):
        return Completion(self.replies.pop(0))


def op(sql: str) -> str:
    return f"I book it.\nAction: Operation\n```sql\n{sql}\n```"


CANCEL = [
    "DELETE FROM meeting_attendees WHERE meeting_id = 91;",
    "DELETE FROM meetings WHERE meeting_id = 91;",
]


def scheduling_run(store_path, statements, task="Book Fjord for Ben Ortiz and Dana Kim on 2026-12-03 at 9."):
    """A scheduling run that executes `statements`, saved to the server's store like a served run."""
    profile = load_profile("scheduling-assistant")
    replies = [
        op("SELECT * FROM free_rooms('2026-12-03 09:00', '2026-12-03 10:00', 2) WHERE name = 'Fjord';"),
        *(op(sql) for sql in statements),
        op("SELECT count(*) FROM meeting_attendees WHERE meeting_id = 91;"),
        "Done.\nAction: Answer\nFinal Answer: I booked Fjord for Planning on 2026-12-03 09:00-10:00.",
    ]
    try:
        traj = Agent(Scripted(replies), profile).run(task)
    finally:
        profile.sql_tool.close()  # DuckDB: one configuration per file per process; let the server write
    with open_store(store_path) as store:
        store.save(traj)
    return traj, profile.database_path()


def meetings(db) -> list[tuple]:
    """Meeting 91 as the real calendar has it (read with the tool's own configuration)."""
    tool = SQLTool(database=db)
    try:
        return tool.run_rows("SELECT title FROM meetings WHERE meeting_id = 91")
    finally:
        tool.close()


def test_a_booking_waits_for_approval_then_lands(server) -> None:
    traj, db = scheduling_run(server.settings.store, BOOK)
    late, _ = scheduling_run(server.settings.store, BOOK)  # another run books the same meeting id
    # The agent saw its own writes (the count after booking came from its scratch copy)...
    assert traj.steps[3].observation == "[(2,)]"
    assert traj.pending_writes == BOOK and traj.writes_status == "pending"
    # ...but the real calendar is untouched.
    assert meetings(db) == []
    client = AgentLMClient(server.v1)
    stored = httpx.get(f"{server.v1}/trajectories/{traj.id}").json()
    assert stored["pending_writes"] == BOOK and stored["writes_status"] == "pending"

    report = client.decide_writes(traj.id, "approve", approved_by="dana")
    assert report == {"trajectory_id": traj.id, "writes_status": "applied", "statements": BOOK}
    assert meetings(db) == [("Planning",)]
    assert httpx.get(f"{server.v1}/trajectories/{traj.id}").json()["writes_status"] == "applied"
    # Approving twice applies nothing twice.
    with pytest.raises(APIUnavailableError, match="no pending database changes"):
        client.decide_writes(traj.id, "approve")

    # The other run's booking no longer applies: nothing changes, and it keeps its pending changes
    # for the person to discard.
    response = httpx.post(f"{server.v1}/trajectories/{late.id}/writes", json={"decision": "approve"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "writes_not_applied"
    assert meetings(db) == [("Planning",)]
    assert httpx.get(f"{server.v1}/trajectories/{late.id}").json()["writes_status"] == "pending"

    # Cancelling goes through the same approved path, and leaves the sample calendar as it was.
    cancel, _ = scheduling_run(server.settings.store, CANCEL, task="Cancel meeting 91.")
    assert cancel.steps[-2].observation == "[(0,)]" and meetings(db) == [("Planning",)]
    assert client.decide_writes(cancel.id, "approve")["writes_status"] == "applied"
    assert meetings(db) == []


def test_a_discarded_booking_never_lands(server) -> None:
    traj, db = scheduling_run(server.settings.store, BOOK)
    report = AgentLMClient(server.v1).decide_writes(traj.id, "discard")
    assert report["writes_status"] == "discarded" and meetings(db) == []
    stored = httpx.get(f"{server.v1}/trajectories/{traj.id}").json()
    assert stored["writes_status"] == "discarded"


def test_writes_decisions_are_validated(server) -> None:
    bad = httpx.post(f"{server.v1}/trajectories/nope/writes", json={"decision": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "decision"
    missing = httpx.post(f"{server.v1}/trajectories/nope/writes", json={"decision": "approve"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "trajectory_not_found"
    hr = httpx.post(f"{server.v1}/trajectories/nope/writes", json={"decision": "approve", "extra": 1})
    assert hr.status_code == 400


def test_the_ui_shows_pending_changes_and_applies_them_on_approval(server, monkeypatch) -> None:
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from agentlm.ui.client import ModelInfo

    traj, db = scheduling_run(server.settings.store, BOOK)
    monkeypatch.setenv("AGENTLM_API_URL", server.v1)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "ui" / "app.py"), default_timeout=60)
    at.session_state["messages-scheduling-assistant"] = [
        {"role": "user", "content": traj.task},
        {
            "role": "assistant",
            "content": traj.final_answer,
            "steps": [],
            "trajectory_id": traj.id,
            "pending_writes": traj.pending_writes,
        },
    ]
    at.run()
    at.selectbox[0].set_value(ModelInfo("scheduling-assistant", True)).run()
    assert not at.exception
    assert any("INSERT INTO meetings" in c.value for c in at.code)  # the changes are shown first
    assert "Nothing is saved until you approve" in at.info[0].value
    assert meetings(db) == []
    at.button(key="approve-1").click().run()
    assert not at.exception
    assert meetings(db) == [("Planning",)]
    assert "Changes saved." in [c.value for c in at.caption]
    # Leave the sample calendar as it was, through the same approved path.
    cancel, _ = scheduling_run(server.settings.store, CANCEL, task="Cancel meeting 91.")
    AgentLMClient(server.v1).decide_writes(cancel.id, "approve")
    assert meetings(db) == []

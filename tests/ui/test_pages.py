"""The Trajectories, Review and Models pages, each against a real API on a scripted engine.

The pages run through the app's entry (ui/app.py: the sidebar and the navigation), switched to
as a user would pick them; runs are stored directly or made by asking the agent through the API.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from datetime import date
from pathlib import Path

import httpx
from scripted import scripted_server
from streamlit.testing.v1 import AppTest

from agentlm.agent.trajectory import ActionStep, Feedback, FinalAnswerStep, StopReason, ToolCall, Trajectory
from agentlm.serve.store import open_store
from agentlm.train.eval import EvalRow
from agentlm.train.promote import main as promote_main
from agentlm.ui.client import AgentLMClient

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
DAY = 1717200000.0  # 2024-06-01 00:00 UTC
SQL_STEP = "I count the departments.\nAction: Operation\n```sql\nSELECT count(*) FROM departments\n```"


def open_page(v1: str, monkeypatch, page: str) -> AppTest:
    """The app at `page` (a page file beside ui/app.py), talking to the API at `v1`."""
    monkeypatch.setenv("AGENTLM_API_URL", v1)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def stored_run(created_at: float, model: str, task: str, **kw) -> Trajectory:
    return Trajectory(
        task=task,
        profile="hr-assistant",
        model=model,
        prompt=[{"role": "user", "content": "You operate a database."}, {"role": "assistant", "content": "Ok."}],
        steps=[
            ActionStep(0, SQL_STEP, "I count the departments.", ToolCall("sql", "SELECT count(*) FROM departments"), "[(5,)]"),
            FinalAnswerStep(1, "Action: Answer\nFinal Answer: 5", "", "5"),
        ],
        final_answer="5",
        created_at=created_at,
        duration_seconds=1.5,
        **{"stop_reason": StopReason.ANSWER, **kw},
    )  # fmt: skip


def answer(text: str) -> str:
    return f"I have it.\nAction: Answer\nFinal Answer: {text}"


def test_the_browser_filters_runs_and_opens_one_with_its_steps_and_charts(tmp_path, monkeypatch) -> None:
    store_path = tmp_path / "store.sqlite3"
    liked = stored_run(DAY + 60, "scripted", "How many departments are there?")
    disliked = stored_run(
        DAY + 86400 + 60, "other-model", "Who manages Sales?", stop_reason=StopReason.MAX_ROUNDS, reward=0.0
    )
    with scripted_server(store_path) as (v1, _engine):
        with open_store(store_path) as store:
            for run in (liked, disliked):
                store.save(run)
            store.set_feedback(liked.id, Feedback(1))
            store.set_feedback(disliked.id, Feedback(-1, "wrong department"))
        at = open_page(v1, monkeypatch, "trajectories.py")
        assert at.title[0].value == "Trajectories"
        assert {m.label: m.value for m in at.metric}["Runs"] == "2"
        table = at.dataframe[0].value
        assert list(table["ID"]) == [disliked.id, liked.id]  # newest first
        assert list(table["Rating"]) == ["👎", "👍"] and list(table["Steps"]) == [2, 2]
        assert set(at.selectbox(key="traj-model").options) == {"Any", "scripted", "other-model"}
        assert "max_rounds" in at.selectbox(key="traj-stop-reason").options

        at.selectbox(key="traj-feedback").set_value("👍").run()
        assert list(at.dataframe[0].value["ID"]) == [liked.id]
        at.selectbox(key="traj-feedback").set_value("Any").run()
        at.selectbox(key="traj-model").set_value("other-model").run()
        assert list(at.dataframe[0].value["ID"]) == [disliked.id]
        at.selectbox(key="traj-model").set_value("Any").run()
        at.date_input(key="traj-since").set_value(date(2024, 6, 2)).run()
        assert list(at.dataframe[0].value["ID"]) == [disliked.id]
        at.date_input(key="traj-until").set_value(date(2024, 6, 1)).run()  # from after until: nothing
        assert any("No runs match" in i.value for i in at.info)
        at.date_input(key="traj-since").set_value(None).run()
        assert list(at.dataframe[0].value["ID"]) == [liked.id]  # June 1st, the whole day
        at.date_input(key="traj-until").set_value(None).run()
        at.number_input(key="traj-min-reward").set_value(0.0).run()
        assert list(at.dataframe[0].value["ID"]) == [disliked.id]  # the one run with a reward
        at.number_input(key="traj-min-reward").set_value(None).run()

        at.selectbox(key="traj-run").set_value(disliked.id).run()
        assert not at.exception, at.exception
        shown = " ".join(m.value for m in at.markdown)
        assert "Who manages Sales?" in shown and "**Step 1**" in shown and "**Step 2**" in shown
        assert "wrong department" in shown and "👎" in shown
        assert any(c.value == "SELECT count(*) FROM departments" for c in at.code)
        assert any("stopped: max_rounds" in c.value for c in at.caption)
        assert [t.label for t in at.tabs] == ["Runs", "Charts"]
        # The charts tab draws success, thumbs, steps, seconds and stop reasons (only while open).
        assert not at.tabs[1].markdown
        at.session_state["traj-tab"] = "Charts"
        at.run()
        assert not at.exception, at.exception
        charts = " ".join(m.value for m in at.tabs[1].markdown)
        for title in ("Success", "Thumbs up and down", "Steps per run", "Seconds per run", "stop reason"):
            assert title in charts


def test_a_step_correction_takes_the_run_out_of_the_review_queue(tmp_path, monkeypatch) -> None:
    with scripted_server(tmp_path / "store.sqlite3") as (v1, engine):
        client = AgentLMClient(v1)
        ids = []
        for question in ("How many departments are there?", "Who manages Sales?", "Who is Dana Kim?"):
            engine.script(SQL_STEP, answer("5"))
            events = list(client.stream_agent("hr-assistant", question))
            ids.append(next(e.trajectory_id for e in events if e.trajectory_id))
        first, second, answered = ids
        client.send_feedback(first, -1, "counted the wrong table")
        client.send_feedback(second, -1)
        client.send_feedback(answered, -1, corrected_answer="Dana Kim is in Sales.")  # corrected already
        at = open_page(v1, monkeypatch, "review.py")
        assert {m.label: m.value for m in at.metric}["Runs waiting for review"] == "2"
        assert at.selectbox(key="review-run").options[0].endswith(f"({second})")  # newest first

        at.selectbox(key="review-run").set_value(first).run()
        shown = " ".join(m.value for m in at.markdown)
        assert "How many departments are there?" in shown and "counted the wrong table" in shown
        at.selectbox(key=f"review-target-{first}").set_value(0).run()
        reply = next(t for t in at.text_area if t.label == "Reply the model should have given")
        assert reply.value == SQL_STEP  # prefilled with the model's own reply
        better = "I count the employees.\nAction: Operation\n```sql\nSELECT count(*) FROM employees\n```"
        reply.input(better)
        next(t for t in at.text_input if t.label == "Comment (optional)").input("employees, not departments")
        next(b for b in at.button if b.label == "Send correction").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]

        assert f"Correction recorded for {first}." in [s.value for s in at.success]
        assert {m.label: m.value for m in at.metric}["Runs waiting for review"] == "1"
        assert at.selectbox(key="review-run").value == second  # the next run waiting
        feedback = httpx.get(f"{v1}/trajectories/{first}").json()["feedback"]
        assert feedback["rating"] == -1 and feedback["comment"] == "employees, not departments"
        assert feedback["corrected_step"] == 0 and feedback["corrected_output"] == better
        assert feedback["corrected_answer"] is None

        # The final answer, corrected: the queue empties.
        at.selectbox(key=f"review-target-{second}").set_value("answer").run()
        final = next(t for t in at.text_area if t.label == "Corrected final answer")
        assert final.value == "5"
        next(b for b in at.button if b.label == "Send correction").click().run()
        assert any("still the model's own" in w.value for w in at.warning)  # unchanged: not sent
        final = next(t for t in at.text_area if t.label == "Corrected final answer")
        final.input("Sales is managed by Zoe Kowalski.")
        next(b for b in at.button if b.label == "Send correction").click().run()
        assert {m.label: m.value for m in at.metric}["Runs waiting for review"] == "0"
        assert any("Nothing to review" in i.value for i in at.info)
        assert httpx.get(f"{v1}/trajectories/{second}").json()["feedback"]["corrected_answer"] == (
            "Sales is managed by Zoe Kowalski."
        )


def test_the_models_page_shows_the_history_promote_wrote(tmp_path, monkeypatch) -> None:
    history = tmp_path / "promotions.jsonl"
    monkeypatch.setenv("AGENTLM_PROMOTIONS", str(history))  # the server's history file
    with scripted_server(tmp_path / "store.sqlite3") as (v1, _engine):
        at = open_page(v1, monkeypatch, "models.py")
        assert "No promotion decisions yet" in at.info[0].value and "--promote" in at.info[0].value

        old = EvalRow("runs/a", {"heldout": 0.5}, mc_accuracy=0.40, perplexity=10.0)
        new = EvalRow("runs/b", {"heldout": 0.25}, mc_accuracy=0.41, perplexity=9.0)
        for n, rows in enumerate(([old], [old, new])):
            eval_json = tmp_path / f"eval{n}.json"
            eval_json.write_text(json.dumps([asdict(r) for r in rows]))
            with contextlib.suppress(SystemExit):  # 3: keep the previous one, recorded all the same
                promote_main(
                    ["--eval", str(eval_json), "--history", str(history), "--checkpoint", rows[-1].model]
                )

        at.run()
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        assert list(table["Checkpoint"]) == ["runs/b", "runs/a"]
        assert list(table["Decision"]) == ["kept previous", "promoted"] and list(table["Stage"]) == [
            "sft",
            "sft",
        ]
        assert table["Reason"][0].startswith("worse on mean agent success")
        evals = at.dataframe[1].value  # the newest candidate's, first
        assert list(evals.index) == ["previous", "new"] and list(evals["checkpoint"]) == ["runs/a", "runs/b"]
        assert list(evals["success: heldout"]) == [0.5, 0.25] and list(evals["perplexity"]) == [10.0, 9.0]
        assert any("50.0% -> 25.0% worse" in m.value for m in at.markdown)
        at.selectbox(key="models-candidate").set_value(1).run()
        evals = at.dataframe[1].value
        assert list(evals.index) == ["new"] and evals["MC accuracy"].iloc[0] == 0.40
        assert "Metrics over candidates" in [h.value for h in at.subheader]

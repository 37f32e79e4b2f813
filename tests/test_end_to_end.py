"""The whole loop, with real parts: train -> serve -> agent with SQL -> store -> feedback -> export -> UI.

A tiny Llama-style model and tokenizer are built here, trained with `train/run.sh` (tiny preset) on
the bundled HR trajectories until it reproduces them, served with `agentlm serve`, and asked the
HR question through the official `openai` client. The agent's SQL runs against the real DuckDB
sample database; the answer must be the database's answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import duckdb
import httpx
import pytest
from openai import OpenAI
from tiny import build_tiny_model

from agentlm.agent.profiles import load_profile
from agentlm.data.formats import read_jsonl
from agentlm.processes import free_port, start_server, stop

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How many vacation days does Dana Kim have left?"
GOLD_SQL = (
    "SELECT b.entitled_days - b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
    "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim' AND b.leave_type = 'vacation' AND b.year = 2026"
)


def _bundled(name: str) -> Path:
    return Path(str(resources.files("agentlm.data") / "bundled" / name))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loop-home")


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    return {**os.environ, "AGENTLM_HOME": str(home), "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """A tiny model trained with train/run.sh until it reproduces the bundled HR trajectories.

    eta=1 (agent data only): a 3M-parameter model cannot also learn general chat in a test's time;
    mixing at the default eta is covered by tests/data/test_mix.py and tests/train/.
    """
    work = tmp_path_factory.mktemp("loop-train")
    corpus = [
        t.content
        for path in ("hr_trajectories.jsonl", "general_chat.jsonl")
        for c in read_jsonl(_bundled(path))
        for t in c.turns
    ]
    base = build_tiny_model(work / "base", corpus)
    out = work / "checkpoint"
    result = subprocess.run(
        ["bash", str(REPO / "train" / "run.sh"), "--base-model", str(base), "--output", str(out), "--preset", "tiny",
         "--workdir", str(work / "run"), "--eta", "1"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def server(checkpoint: Path, env: dict[str, str], home: Path):
    port = free_port()
    proc, _ = start_server(["--model", str(checkpoint)], port, env=env, timeout=120)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_agent_answers_from_the_database_and_the_run_flows_back_into_training_data(
    server: str, home: Path, env: dict[str, str], tmp_path: Path
) -> None:
    client = OpenAI(base_url=f"{server}/v1", api_key="EMPTY")
    assert "hr-assistant" in {m.id for m in client.models.list()}

    reply = client.chat.completions.create(
        model="hr-assistant", messages=[{"role": "user", "content": QUESTION}]
    )

    # The right answer, computed here from the same database file the agent used.
    db = home / "hr.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        (expected,) = conn.execute(GOLD_SQL).fetchone()
    answer = reply.choices[0].message.content
    assert str(expected) in answer, answer

    ext = reply.model_extra["agentlm"]
    assert ext["stop_reason"] == "answer"
    sql_steps = [s for s in ext["steps"] if s["kind"] == "action" and s["tool_call"]]
    assert sql_steps, ext["steps"]
    # The observation is what DuckDB returns for the model's SQL: it really ran.
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(sql_steps[-1]["tool_call"]["input"]).fetchall()
    assert sql_steps[-1]["observation"] == repr(rows)

    trajectory_id = ext["trajectory_id"]
    stored = httpx.get(f"{server}/v1/trajectories/{trajectory_id}").json()
    assert stored["id"] == trajectory_id and stored["final_answer"] == answer

    feedback = httpx.post(
        f"{server}/v1/feedback", json={"trajectory_id": trajectory_id, "rating": 1, "comment": "right"}
    )
    assert feedback.status_code == 200, feedback.text

    out = tmp_path / "exported.jsonl"
    subprocess.run(
        [sys.executable, "-m", "agentlm.cli", "data", "export", "--out", str(out)],
        env=env,
        check=True,
        timeout=120,
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [r for r in records if r["id"] == trajectory_id]
    assert len(mine) == 1
    turns = mine[0]["conversations"]
    # The instruction, "Ok.", the worked example the run was shown, then the question.
    example = load_profile("hr-assistant").exemplar_bank.nearest([QUESTION])
    question_turn = 2 + len(example.messages)
    assert turns[question_turn] == {"from": "human", "loss": None, "value": QUESTION}
    assert all(t["loss"] is not True for t in turns[:question_turn])  # the example is never trained on
    assert turns[-1]["from"] == "gpt" and turns[-1]["loss"] is True and str(expected) in turns[-1]["value"]


def test_streamlit_app_runs_the_agent_against_the_live_api(
    server: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AGENTLM_API_URL", f"{server}/v1")
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception
    with duckdb.connect(str(home / "hr.duckdb"), read_only=True) as conn:
        (expected,) = conn.execute(GOLD_SQL).fetchone()
    shown = " ".join(md.value for m in at.chat_message for md in m.markdown)
    assert str(expected) in shown
    # Each step was shown (the SQL the agent ran is on the page).
    assert any("leave_balances" in c.value for c in at.code), [c.value for c in at.code]

    # Thumbs down with a comment and a correction, through the form under the answer.
    at.radio(key="rating-1").set_value("👎")
    at.text_input(key="comment-1").input("check the 2025 carry-over too")
    at.text_input(key="corrected-1").input("Dana Kim has 18 days plus carry-over.")
    next(b for b in at.button if b.label == "Send feedback").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    trajectory_id = at.session_state["messages-hr-assistant"][1]["trajectory_id"]
    stored = httpx.get(f"{server}/v1/trajectories/{trajectory_id}").json()
    assert stored["feedback"]["rating"] == -1
    assert stored["feedback"]["comment"] == "check the 2025 carry-over too"
    assert stored["feedback"]["corrected_answer"] == "Dana Kim has 18 days plus carry-over."

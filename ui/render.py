"""What the pages share: the API client the sidebar points at, and how a run and its parts look.

The pages talk to the API only; a stored run arrives as the API's JSON (agent/trajectory.py's
``Trajectory`` as a dict), so this module reads dicts of that shape and nothing else.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from agentlm.api import DEFAULT_API_URL
from agentlm.ui.client import AgentLMClient

RATINGS = {1: "👍", -1: "👎"}


def connection_sidebar() -> None:
    """The sidebar's API URL and key, shared by every page (AGENTLM_API_URL / AGENTLM_API_KEY)."""
    with st.sidebar:
        st.header("AgentLM")
        st.text_input("API URL", os.environ.get("AGENTLM_API_URL", DEFAULT_API_URL), key="api_url")
        st.text_input("API key", os.environ.get("AGENTLM_API_KEY", ""), type="password", key="api_key")


def api_client() -> AgentLMClient:
    """A client for the API the sidebar names; the environment's when a page runs on its own."""
    url = st.session_state.get("api_url") or os.environ.get("AGENTLM_API_URL", DEFAULT_API_URL)
    key = st.session_state.get("api_key") or os.environ.get("AGENTLM_API_KEY") or None
    return AgentLMClient(url, key)


def when(ts: float | None) -> str:
    """Unix seconds as UTC time, the way every page shows it."""
    return "" if ts is None else datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def short(text: str | None, width: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_step(step: dict[str, Any], whole: bool = False) -> None:
    """One agent step: its thought, the tool call it made (SQL, bash, ...), and what came back.

    The answer step shows only its thought, as the chat shows the answer itself; `whole` shows its
    reply too (a stored run's page)."""
    if step.get("thought"):
        st.markdown(f"**Thought:** {step['thought']}")
    repair = step.get("repair")
    if repair:
        st.caption(
            f"Malformed action `{repair['original']}` read as `{repair['repaired']}` (BLEU {repair['bleu']})"
        )
    if step.get("kind") == "answer":
        if whole:
            st.code(step["model_output"], language=None)
        return
    call = step.get("tool_call")
    if call:
        st.code(call["input"], language={"sql": "sql", "bash": "bash"}.get(call["name"]))
    if step.get("error") == "invalid_format":
        st.warning(f"The reply did not fit the action format:\n\n{step['model_output']}")
    elif step.get("error"):
        st.error(step["observation"])
    else:
        st.code(step["observation"], language=None)


def render_run(run: dict[str, Any]) -> None:
    """A stored run whole: what was asked, each step, the answer, how it ended, and its feedback."""
    st.markdown(f"**Task:** {run['task']}")
    reward = run.get("reward")
    st.caption(
        f"{run['id']} · {when(run['created_at'])} UTC · profile {run['profile']} · model {run['model']} · "
        f"{run.get('duration_seconds', 0.0):.1f} s · stopped: {run.get('stop_reason') or 'unknown'}"
        + ("" if reward is None else f" · reward {reward:g}")
    )
    for position, step in enumerate(run["steps"]):
        st.markdown(f"**Step {position + 1}**")
        render_step(step, whole=True)
    if run.get("final_answer") is not None:
        st.success(f"**Answer:** {run['final_answer']}")
    elif run.get("error"):
        st.error(f"The run failed: {run['error']}")
    else:
        st.warning("No answer.")
    render_feedback(run.get("feedback"))


def render_feedback(feedback: dict[str, Any] | None) -> None:
    if not feedback:
        st.caption("No feedback yet.")
        return
    st.markdown(
        f"**Feedback:** {RATINGS.get(feedback['rating'], feedback['rating'])} "
        f"({when(feedback.get('created_at'))} UTC)"
        + (f" — {feedback['comment']}" if feedback.get("comment") else "")
    )
    if feedback.get("corrected_answer"):
        st.markdown(f"**Corrected answer:** {feedback['corrected_answer']}")
    if feedback.get("corrected_step") is not None:
        st.markdown(f"**Corrected step {feedback['corrected_step'] + 1}:** the reply it should have been")
        st.code(feedback.get("corrected_output") or "", language=None)

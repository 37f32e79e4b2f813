"""The Assistant page: ask an agent, watch its steps as they happen, rate the answer.

Each question is sent with the conversation before it (the questions and the answers shown), so
follow-ups work; "New conversation" starts over. A page of the app in ui/app.py.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from agentlm.ui.client import AgentLMClient, APIUnavailableError, ModelInfo
from agentlm.ui.render import api_client, render_step

# Friendlier names for the bundled profiles.
TITLES = {"hr-assistant": "HR assistant", "scheduling-assistant": "Scheduling assistant"}


def approval_form(message: dict[str, Any], index: int, client: AgentLMClient) -> None:
    """Database changes the agent made on a scratch copy: they apply only if the user approves."""
    pending = message.get("pending_writes") or []
    if not pending or not message.get("trajectory_id"):
        return
    if message.get("writes_decision"):
        st.caption(message["writes_decision"])
        return
    st.info("The assistant wants to make these changes. Nothing is saved until you approve.")
    st.code("\n".join(pending), language="sql")
    approve, discard = st.columns(2)
    decision = None
    if approve.button("Approve changes", key=f"approve-{index}", type="primary"):
        decision = "approve"
    if discard.button("Discard", key=f"discard-{index}"):
        decision = "discard"
    if decision is None:
        return
    try:
        client.decide_writes(message["trajectory_id"], decision)
    except APIUnavailableError as e:
        st.error(str(e))
        return
    message["writes_decision"] = "Changes saved." if decision == "approve" else "Changes discarded."
    st.rerun()


def feedback_form(message: dict[str, Any], index: int, client: AgentLMClient) -> None:
    trajectory_id = message.get("trajectory_id")
    if not trajectory_id:
        return
    if message.get("feedback_sent"):
        st.caption("Thanks — your feedback was recorded.")
        return
    with st.form(key=f"feedback-{index}"):
        st.caption("Was this answer right?")
        rating = st.radio("Rating", ["👍", "👎"], horizontal=True, index=None, key=f"rating-{index}")
        comment = st.text_input("Comment (optional)", key=f"comment-{index}")
        corrected = st.text_input("The right answer, if it was wrong (optional)", key=f"corrected-{index}")
        if st.form_submit_button("Send feedback"):
            if rating is None:
                st.warning("Pick 👍 or 👎 first.")
                return
            try:
                client.send_feedback(trajectory_id, 1 if rating == "👍" else -1, comment, corrected or None)
            except APIUnavailableError as e:
                st.error(str(e))
                return
            message["feedback_sent"] = True
            st.rerun()


def conversation(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The chat as the API takes it: each turn's role and the text shown (steps stay in the UI)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def run_agent(
    client: AgentLMClient, profile: str, question: str, history: list[dict[str, str]]
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    answer, trajectory_id, stop_reason, pending = "", None, None, None
    with st.status("Working…", expanded=True) as status:
        for event in client.stream_agent(profile, question, history):
            if event.step is not None:
                steps.append(event.step)
                st.markdown(f"**Step {len(steps)}**")
                render_step(event.step)
            answer += event.text
            trajectory_id = event.trajectory_id or trajectory_id
            stop_reason = event.stop_reason or stop_reason
            pending = event.pending_writes or pending
        label = "Done" if stop_reason == "answer" else f"Stopped: {stop_reason or 'unknown'}"
        status.update(label=f"{label} ({len(steps)} steps)", state="complete", expanded=False)
    return {
        "role": "assistant",
        "content": answer,
        "steps": steps,
        "trajectory_id": trajectory_id,
        "pending_writes": pending,
    }


def main() -> None:
    client = api_client()
    try:
        models = client.models()
    except APIUnavailableError as e:
        st.error(str(e))
        return

    agents = [m for m in models if m.is_agent]
    ordered: list[ModelInfo] = sorted(agents, key=lambda m: m.id != "hr-assistant") + [
        m for m in models if not m.is_agent
    ]
    with st.sidebar:
        choice = st.selectbox(
            "Assistant",
            ordered,
            format_func=lambda m: TITLES.get(m.id, m.id) if m.is_agent else f"{m.id} (plain chat)",
        )
    key = f"messages-{choice.id}"
    with st.sidebar:
        if st.button("New conversation"):
            st.session_state.pop(key, None)
    messages: list[dict[str, Any]] = st.session_state.setdefault(key, [])

    st.title(TITLES.get(choice.id, choice.id))
    for i, message in enumerate(messages):
        with st.chat_message(message["role"]):
            if message.get("steps"):
                with st.expander(f"{len(message['steps'])} steps"):
                    for step in message["steps"]:
                        render_step(step)
            st.markdown(message["content"] or "_(no answer)_")
            if message["role"] == "assistant":
                approval_form(message, i, client)
                feedback_form(message, i, client)

    question = st.chat_input("Ask a question")
    if not question:
        return
    messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        try:
            if choice.is_agent:
                reply = run_agent(client, choice.id, question, conversation(messages[:-1]))
            else:
                text = st.write_stream(client.chat(choice.id, conversation(messages)))
                reply = {"role": "assistant", "content": text}
        except APIUnavailableError as e:
            st.error(str(e))
            messages.pop()
            return
    messages.append(reply)
    st.rerun()


if __name__ == "__main__":  # Streamlit runs a page file as __main__
    main()

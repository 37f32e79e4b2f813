"""The Review page: thumbs-down runs waiting for a correction, newest first.

The queue is GET /v1/trajectories?rating=-1&corrected=false: runs whose latest feedback is a
thumbs down that says nothing about what would have been right. For each, a reviewer writes the
final answer it should have given, or picks a step and writes the reply the model should have
given there (in the run's protocol, e.g. a better SQL action); the correction is posted as new
feedback (thumbs down, a comment, the correction), training learns from it, and the run leaves
the queue. A page of the app in ui/app.py.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from agentlm.ui.client import AgentLMClient, APIUnavailableError, TrajectoryQuery
from agentlm.ui.render import api_client, render_feedback, render_step, short, when

QUEUE = TrajectoryQuery(rating="-1", corrected=False)
SHOWN = 100  # runs offered at once; the count says how many wait in all
ANSWER = "answer"  # the "What to correct" choice for the final answer; a step is its index


def step_label(run: dict[str, Any], choice: str | int) -> str:
    if choice == ANSWER:
        return f"The final answer: {short(run.get('final_answer') or '(none)', 60)}"
    step = run["steps"][choice]
    call = step.get("tool_call")
    what = f"{call['name']}: {short(call['input'], 50)}" if call else short(step.get("model_output"), 50)
    return f"Step {choice + 1} — {what}"


def show_run(run: dict[str, Any]) -> None:
    st.markdown(f"**Task:** {run['task']}")
    st.caption(
        f"{run['id']} · {when(run['created_at'])} UTC · {run['profile']} · {run['model']} · "
        f"stopped: {run.get('stop_reason') or 'unknown'}"
    )
    for position, step in enumerate(run["steps"]):
        with st.expander(f"Step {position + 1}", expanded=True):
            render_step(step, whole=True)
    st.markdown(f"**Answer given:** {run.get('final_answer') or '_(none)_'}")
    render_feedback(run.get("feedback"))


def correction_form(client: AgentLMClient, run: dict[str, Any]) -> None:
    """Pick what to correct (outside the form: the text box is prefilled from the pick), then write it."""
    run_id = run["id"]
    target = st.selectbox(
        "What to correct",
        [ANSWER, *range(len(run["steps"]))],
        format_func=lambda c: step_label(run, c),
        key=f"review-target-{run_id}",
    )
    with st.form(key=f"review-form-{run_id}"):
        if target == ANSWER:
            original = run.get("final_answer") or ""
            text = st.text_area("Corrected final answer", original, key=f"review-answer-{run_id}")
        else:
            original = run["steps"][target]["model_output"]
            st.caption("The whole reply, in the run's protocol: a thought, then its action.")
            text = st.text_area(
                "Reply the model should have given",
                original,
                height=200,
                key=f"review-output-{run_id}-{target}",
            )
        comment = st.text_input("Comment (optional)", key=f"review-comment-{run_id}")
        if not st.form_submit_button("Send correction", type="primary"):
            return
    if not text.strip() or text.strip() == original.strip():
        st.warning("Write what it should have been: the text is still the model's own.")
        return
    try:
        if target == ANSWER:
            client.send_feedback(run_id, -1, comment, corrected_answer=text.strip())
        else:
            client.send_feedback(run_id, -1, comment, corrected_step=target, corrected_output=text.strip())
    except APIUnavailableError as e:
        st.error(str(e))
        return
    st.session_state["review-done"] = f"Correction recorded for {run_id}."
    st.rerun()  # the run has left the queue: the box shows the next one


def main() -> None:
    st.title("Review")
    st.caption("Thumbs-down runs without a correction, newest first. Correct one and it leaves the queue.")
    if done := st.session_state.pop("review-done", None):
        st.success(done)
    client = api_client()
    try:
        queue = client.trajectories(QUEUE, limit=SHOWN)
        st.metric("Runs waiting for review", queue.total)
        if not queue.data:
            st.info("Nothing to review: every thumbs-down run has a correction.")
            return
        by_id = {r["id"]: r for r in queue.data}
        picked = st.selectbox(
            "Run to review",
            list(by_id),
            format_func=lambda i: f"{when(by_id[i]['created_at'])} · {short(by_id[i]['task'], 60)} ({i})",
            key="review-run",
        )
        run = by_id[picked]
        with st.container(border=True):
            show_run(run)
        correction_form(client, run)
    except APIUnavailableError as e:
        st.error(str(e))


if __name__ == "__main__":  # Streamlit runs a page file as __main__
    main()

"""The Trajectories page: every stored run, filtered and paged, one opened whole, and charts.

The filters are the API's (GET /v1/trajectories); the charts are GET /v1/trajectories/stats under
the same filters. Times are UTC, as the stats group them by UTC day. A page of the app in ui/app.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from agentlm.ui.client import AgentLMClient, APIUnavailableError, TrajectoryQuery
from agentlm.ui.render import RATINGS, api_client, render_run, short, when

PAGE_SIZE = 25
ANY = "Any"
FEEDBACK = {ANY: None, "👍": "1", "👎": "-1", "Not rated": "none"}


@dataclass
class Choices:
    """What the filters offer: the served agent profiles, and the models and stop reasons stored."""

    profiles: list[str]
    models: list[str]
    stop_reasons: list[str]


def choices(client: AgentLMClient) -> Choices:
    profiles = [m.id for m in client.models() if m.is_agent]
    everything = client.trajectory_stats(points=0)
    models = sorted({d["model"] for d in everything["days"]})
    return Choices(profiles, models, sorted(everything["stop_reasons"]))


def _day_start(day: date) -> float:
    return datetime.combine(day, time(), tzinfo=UTC).timestamp()


def filters(options: Choices) -> TrajectoryQuery:
    """The filter widgets, as the API's query."""
    first = st.columns(3)
    profile = first[0].selectbox("Profile", [ANY, *options.profiles], key="traj-profile")
    model = first[1].selectbox("Model", [ANY, *options.models], key="traj-model")
    feedback = first[2].selectbox("Feedback", list(FEEDBACK), key="traj-feedback")
    second = st.columns(5)
    stop_reason = second[0].selectbox("Stop reason", [ANY, *options.stop_reasons], key="traj-stop-reason")
    min_reward = second[1].number_input("Min reward", value=None, step=0.1, key="traj-min-reward")
    max_reward = second[2].number_input("Max reward", value=None, step=0.1, key="traj-max-reward")
    since = second[3].date_input("From (UTC)", value=None, key="traj-since")
    until = second[4].date_input("To (UTC)", value=None, key="traj-until")
    return TrajectoryQuery(
        profile=None if profile == ANY else profile,
        model=None if model == ANY else model,
        rating=FEEDBACK[feedback],  # type: ignore[arg-type]
        min_reward=min_reward,
        max_reward=max_reward,
        since=None if since is None else _day_start(since),
        until=None if until is None else _day_start(until + timedelta(days=1)),  # the whole last day
        stop_reason=None if stop_reason == ANY else stop_reason,
    )


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Time (UTC)": when(r["created_at"]),
                "Profile": r["profile"],
                "Model": r["model"],
                "Task": short(r["task"]),
                "Steps": len(r["steps"]),
                "Seconds": round(r.get("duration_seconds") or 0.0, 2),
                "Stop reason": r.get("stop_reason") or "",
                "Rating": RATINGS.get((r.get("feedback") or {}).get("rating"), ""),
                "Reward": r.get("reward"),
                "ID": r["id"],
            }
            for r in runs
        ]
    )


def runs_section(client: AgentLMClient, query: TrajectoryQuery, total: int) -> None:
    """A page of the `total` matching runs, and the one picked, whole."""
    if total == 0:
        st.info("No runs match these filters.")
        return
    pages = math.ceil(total / PAGE_SIZE)
    if st.session_state.get("traj-page", 1) > pages:  # the filters narrowed: stay in range
        st.session_state["traj-page"] = pages
    left, right = st.columns([1, 4], vertical_alignment="bottom")
    page = left.number_input("Page", 1, pages, 1, key="traj-page")
    listing = client.trajectories(query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    first = (page - 1) * PAGE_SIZE + 1
    right.caption(
        f"of {pages} · runs {first}–{first + len(listing.data) - 1} of {listing.total}, newest first"
    )
    st.dataframe(runs_table(listing.data), hide_index=True, key="traj-table")
    by_id = {r["id"]: r for r in listing.data}
    picked = st.selectbox(
        "Open a run",
        list(by_id),
        index=None,
        format_func=lambda i: f"{when(by_id[i]['created_at'])} · {short(by_id[i]['task'], 60)} ({i})",
        placeholder="Pick a run on this page to see its steps",
        key="traj-run",
    )
    if picked is not None:
        with st.container(border=True):
            render_run(client.trajectory(picked))


def charts_section(stats: dict[str, Any]) -> None:
    """Success and thumbs per day and model, steps and latency per run, runs per stop reason."""
    if not stats["total"]:
        st.info("No runs match these filters.")
        return
    days = pd.DataFrame(stats["days"])
    days["success"] = days["answered"] / days["runs"]
    left, right = st.columns(2)
    with left:
        st.markdown("**Success (answered share) per day**")
        st.line_chart(days.pivot_table(index="day", columns="model", values="success"), y_label="answered")
    with right:
        st.markdown("**Thumbs up and down per day**")
        thumbs = days.melt(id_vars=["day", "model"], value_vars=["thumbs_up", "thumbs_down"])
        thumbs["series"] = thumbs["model"] + " " + thumbs["variable"].str.replace("_", " ")
        st.line_chart(thumbs.pivot_table(index="day", columns="series", values="value"), y_label="runs")
    points = pd.DataFrame(stats["points"])
    if not points.empty:
        points["time"] = pd.to_datetime(points["created_at"], unit="s", utc=True)
        left, right = st.columns(2)
        with left:
            st.markdown(f"**Steps per run** (the latest {len(points)})")
            st.scatter_chart(points, x="time", y="steps", color="model")
        with right:
            st.markdown(f"**Seconds per run** (the latest {len(points)})")
            st.scatter_chart(points, x="time", y="duration_seconds", color="model", y_label="seconds")
    st.markdown("**Runs per stop reason**")
    reasons = pd.DataFrame({"runs": stats["stop_reasons"]})
    reasons.index.name = "stop reason"
    st.bar_chart(reasons, horizontal=True)


def main() -> None:
    st.title("Trajectories")
    client = api_client()
    try:
        query = filters(choices(client))
        stats = client.trajectory_stats(query)
        total, answered = stats["total"], sum(d["answered"] for d in stats["days"])
        row = st.columns(4)
        row[0].metric("Runs", total)
        row[1].metric("Answered", f"{answered / total:.0%}" if total else "–")
        row[2].metric("👍 Thumbs up", sum(d["thumbs_up"] for d in stats["days"]))
        row[3].metric("👎 Thumbs down", sum(d["thumbs_down"] for d in stats["days"]))
        # Tabs that rerun on a switch, so the charts are drawn only while their tab is open.
        runs, charts = st.tabs(["Runs", "Charts"], key="traj-tab", on_change="rerun")
        if runs.open:
            with runs:
                runs_section(client, query, total)
        if charts.open:
            with charts:
                charts_section(stats)
    except APIUnavailableError as e:
        st.error(str(e))


if __name__ == "__main__":  # Streamlit runs a page file as __main__
    main()

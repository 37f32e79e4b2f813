"""Trajectory endpoints: filters and pages, and the training-ready export streamed from a snapshot."""

from __future__ import annotations

import json
import threading

import httpx
from test_store import make_trajectory

from agentlm.agent.trajectory import Feedback
from agentlm.data.export import export_trajectories
from agentlm.serve.store import TrajectoryStore


def test_filters_pages_and_totals(server) -> None:
    with TrajectoryStore(server.settings.store) as store:
        liked = make_trajectory("filter-a", 100.0, reward=1.0)
        other = make_trajectory("filter-a", 200.0)
        third = make_trajectory("filter-b", 300.0, reward=0.0)
        for t in (liked, other, third):
            store.save(t)
        store.set_feedback(liked.id, Feedback(1))
    get = lambda **q: httpx.get(f"{server.v1}/trajectories", params=q).json()  # noqa: E731
    page = get(profile="filter-a", limit=1)
    assert [t["id"] for t in page["data"]] == [other.id] and page["total"] == 2 and page["has_more"] is True
    assert [t["id"] for t in get(profile="filter-a", limit=1, offset=1)["data"]] == [liked.id]
    assert [t["id"] for t in get(profile="filter-a", rating="1")["data"]] == [liked.id]
    assert [t["id"] for t in get(profile="filter-a", rating="none")["data"]] == [other.id]
    assert [t["id"] for t in get(min_reward=0.5, since=50, until=250)["data"]] == [liked.id]
    bad = httpx.get(f"{server.v1}/trajectories", params={"rating": "great"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
    assert httpx.get(f"{server.v1}/trajectories/{third.id}").json()["profile"] == "filter-b"


def test_export_streams_what_data_export_writes_while_the_server_writes(server, tmp_path) -> None:
    with TrajectoryStore(server.settings.store) as store:
        for i in range(20):
            store.save(make_trajectory("export", 1000.0 + i, reward=1.0 if i % 2 else None))
    stop = threading.Event()

    def writer() -> None:  # the server keeps taking runs during the export
        with TrajectoryStore(server.settings.store) as store:
            i = 0
            while not stop.is_set():
                store.save(make_trajectory("export-late", 5000.0 + i, reward=1.0))
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with httpx.stream(
            "GET", f"{server.v1}/trajectories/export", params={"profile": "export"}
        ) as response:
            assert response.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in response.iter_lines() if line]
    finally:
        stop.set()
        thread.join()
    assert len(lines) == 10  # the rewarded half; unrated, unrewarded runs are not training data
    assert all(r["conversations"][-1]["loss"] is True for r in lines)
    export_trajectories(server.settings.store, tmp_path / "cli.jsonl")
    cli = {r["id"]: r for r in map(json.loads, (tmp_path / "cli.jsonl").read_text().splitlines())}
    assert all(cli[r["id"]] == r for r in lines)  # the CLI and the endpoint agree record for record
    everything = httpx.get(
        f"{server.v1}/trajectories/export", params={"profile": "export", "include_all": "true"}
    )
    assert len(everything.text.splitlines()) == 20

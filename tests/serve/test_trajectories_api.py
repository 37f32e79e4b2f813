"""Trajectory endpoints: filters and pages, and the training-ready export streamed from a snapshot."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from test_store import make_trajectory

from agentlm.agent.trajectory import ActionStep, Feedback, ToolCall
from agentlm.data.export import export_trajectories, trajectory_records
from agentlm.serve import trajectories as trajectories_module
from agentlm.serve.app import create_app
from agentlm.serve.settings import ServeSettings
from agentlm.serve.store import open_store


def test_filters_pages_and_totals(server) -> None:
    with open_store(server.settings.store) as store:
        liked = make_trajectory("filter-a", 100.0, reward=1.0)
        other = make_trajectory("filter-a", 200.0, model="filter-model")
        third = make_trajectory("filter-b", 300.0, reward=0.0)
        for t in (liked, other, third):
            store.save(t)
        store.set_feedback(liked.id, Feedback(1))
    get = lambda **q: httpx.get(f"{server.v1}/trajectories", params=q).json()  # noqa: E731
    ids = lambda **q: [t["id"] for t in get(**q)["data"]]  # noqa: E731
    page = get(profile="filter-a", limit=1)
    assert page["object"] == "list" and page["total"] == 2 and page["has_more"] is True
    assert [t["id"] for t in page["data"]] == [other.id]
    last = get(profile="filter-a", limit=1, offset=1)
    assert [t["id"] for t in last["data"]] == [liked.id] and last["total"] == 2 and last["has_more"] is False
    assert get(profile="filter-a", offset=5) == {"object": "list", "data": [], "total": 2, "has_more": False}
    assert ids(profile="filter-a", rating="1") == [liked.id]
    assert ids(profile="filter-a", rating="none") == [other.id]
    assert ids(model="filter-model") == [other.id]
    assert ids(min_reward=0.5, since=50, until=250) == [liked.id]
    assert ids(profile="filter-b", max_reward=0.0, since=300, until=300.5) == [third.id]
    one = httpx.get(f"{server.v1}/trajectories/{liked.id}").json()
    assert (
        one["profile"] == "filter-a"
        and one["feedback"]["rating"] == 1
        and one["steps"][0]["kind"] == "action"
    )


def test_stats_are_computed_from_the_stored_runs(server) -> None:
    day = 1717200000.0  # 2024-06-01 00:00 UTC
    runs = [
        make_trajectory("stats", day + 60, model="stats-a", duration_seconds=3.0),
        make_trajectory("stats", day + 120, model="stats-a", duration_seconds=1.0, stop_reason="max_rounds"),
        make_trajectory("stats", day + 180, model="stats-b", duration_seconds=2.0),
        make_trajectory("stats", day + 2 * 86400, model="stats-a", duration_seconds=6.0),
    ]
    runs[1].steps = runs[1].steps[:1]
    with open_store(server.settings.store) as store:
        for t in runs:
            store.save(t)
        store.set_feedback(runs[0].id, Feedback(1))
        store.set_feedback(runs[1].id, Feedback(-1, "wrong table"))
        store.set_feedback(runs[3].id, Feedback(-1, corrected_answer="7"))
    reply = httpx.get(f"{server.v1}/trajectories/stats", params={"profile": "stats", "points": 3})
    assert reply.status_code == 200, reply.text
    stats = reply.json()
    assert stats["object"] == "trajectory.stats" and stats["total"] == 4
    assert stats["days"] == [
        {"day": "2024-06-01", "model": "stats-a", "runs": 2, "answered": 1, "thumbs_up": 1,
         "thumbs_down": 1, "mean_steps": 1.5, "mean_seconds": 2.0},
        {"day": "2024-06-01", "model": "stats-b", "runs": 1, "answered": 1, "thumbs_up": 0,
         "thumbs_down": 0, "mean_steps": 2.0, "mean_seconds": 2.0},
        {"day": "2024-06-03", "model": "stats-a", "runs": 1, "answered": 1, "thumbs_up": 0,
         "thumbs_down": 1, "mean_steps": 2.0, "mean_seconds": 6.0},
    ]  # fmt: skip
    assert stats["stop_reasons"] == {"answer": 3, "max_rounds": 1}
    assert [p["id"] for p in stats["points"]] == [r.id for r in runs[1:]]  # the latest 3, oldest first
    assert stats["points"][0] == {
        "id": runs[1].id, "created_at": day + 120, "model": "stats-a", "profile": "stats", "steps": 1,
        "duration_seconds": 1.0,
    }  # fmt: skip
    get = lambda **q: httpx.get(f"{server.v1}/trajectories/stats", params={"profile": "stats", **q}).json()  # noqa: E731
    # The list's filters: the review queue's (thumbs down, no correction), a time window, a model.
    assert get(rating="-1", corrected="false")["total"] == 1
    assert get(since=day + 86400)["days"] == [stats["days"][2]]
    assert get(model="stats-b", stop_reason="answer")["total"] == 1
    assert get(stop_reason="max_rounds")["stop_reasons"] == {"max_rounds": 1}
    assert len(get()["points"]) == 4 and get(points=0)["points"] == []  # 200 by default


def test_an_unknown_trajectory_is_404_and_export_is_not_an_id(server) -> None:
    missing = httpx.get(f"{server.v1}/trajectories/traj-nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "trajectory_not_found"
    assert missing.json()["error"]["type"] == "not_found_error"
    export = httpx.get(f"{server.v1}/trajectories/export", params={"profile": "nobody"})
    assert export.status_code == 200 and export.text == ""
    assert export.headers["content-type"].startswith("application/x-ndjson")


_FILTER_ERRORS = [
    ({"rating": "great"}, "rating"),
    ({"min_reward": "high"}, "min_reward"),
    ({"max_reward": "nan"}, "max_reward"),
    ({"since": "yesterday"}, "since"),
    ({"until": "inf"}, "until"),
]


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [("/trajectories", q, p) for q, p in _FILTER_ERRORS]
    + [("/trajectories/export", q, p) for q, p in _FILTER_ERRORS]
    + [("/trajectories/stats", q, p) for q, p in _FILTER_ERRORS]
    + [
        ("/trajectories/stats", {"points": "2001"}, "points"),
        ("/trajectories/stats", {"points": "-1"}, "points"),
        ("/trajectories/stats", {"corrected": "perhaps"}, "corrected"),
        ("/trajectories", {"limit": "0"}, "limit"),
        ("/trajectories", {"limit": "501"}, "limit"),
        ("/trajectories", {"offset": "-1"}, "offset"),
        ("/trajectories/export", {"include_all": "maybe"}, "include_all"),
    ],
)
def test_bad_filters_are_400_in_the_openai_shape(server, path: str, query: dict, param: str) -> None:
    reply = httpx.get(f"{server.v1}{path}", params=query)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_the_api_key_guards_the_trajectory_routes(tiny_checkpoint, tmp_path) -> None:
    settings = ServeSettings(model=str(tiny_checkpoint), store=tmp_path / "s.sqlite3", api_key="sekret")
    traj = make_trajectory(reward=1.0)
    with open_store(settings.store) as store:
        store.save(traj)
    with TestClient(create_app(settings)) as http:
        for path in (
            "/v1/trajectories",
            "/v1/trajectories/export",
            "/v1/trajectories/stats",
            f"/v1/trajectories/{traj.id}",
            "/v1/promotions",
        ):
            denied = http.get(path)
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
            assert http.get(path, headers={"Authorization": "Bearer sekret"}).status_code == 200


def test_export_is_what_data_export_writes(server, tmp_path) -> None:
    with open_store(server.settings.store) as store:
        for i in range(20):
            store.save(make_trajectory("export", 1000.0 + i, reward=1.0 if i % 2 else None))
        corrected = make_trajectory("export", 2000.0)
        store.save(corrected)
        store.set_feedback(corrected.id, Feedback(1, "close", corrected_answer="2"))
    for include_all in (False, True):
        with open_store(server.settings.store, readonly=True) as snapshot:
            export_trajectories(snapshot.snapshot(), tmp_path / "cli.jsonl", include_all=include_all)
        served = httpx.get(f"{server.v1}/trajectories/export", params={"include_all": include_all})
        assert served.text == (tmp_path / "cli.jsonl").read_text()  # byte for byte, whole store
    mine = httpx.get(f"{server.v1}/trajectories/export", params={"profile": "export"}).text.splitlines()
    records = [json.loads(line) for line in mine]
    assert len(records) == 11  # the rewarded half and the liked one; the rest is not training data
    assert all(r["conversations"][-1]["loss"] is True for r in records)
    assert "Final Answer: 2" in records[-1]["conversations"][-1]["value"]  # the user's correction
    everything = httpx.get(
        f"{server.v1}/trajectories/export", params={"profile": "export", "include_all": "true"}
    )
    assert len(everything.text.splitlines()) == 21


def test_export_streams_a_snapshot_while_the_server_takes_writes(server, monkeypatch) -> None:
    # Big enough (12 MB) that the stream is still open when the writes below arrive: the server
    # stops reading the snapshot while the client does not read.
    produced = 0

    def counted(*args, **kw):
        nonlocal produced
        for record in trajectory_records(*args, **kw):
            produced += 1
            yield record

    monkeypatch.setattr(trajectories_module, "trajectory_records", counted)
    big_observation = "x" * 30_000
    with open_store(server.settings.store) as store:
        runs = []
        for i in range(400):
            traj = make_trajectory("export-big", 10_000.0 + i, reward=1.0)
            traj.steps[0] = ActionStep(0, "Count.", "Count.", ToolCall("sql", "SELECT 1"), big_observation)
            store.save(traj)
            runs.append(traj.id)
    with (
        httpx.Client(timeout=30) as other,
        httpx.stream(
            "GET", f"{server.v1}/trajectories/export", params={"profile": "export-big"}, timeout=30
        ) as response,
    ):
        lines = response.iter_lines()
        first = json.loads(next(lines))
        assert first["id"] == runs[0]
        # The export is mid-way; the server answers writes and reads at once, not after it.
        started = time.monotonic()
        disliked = other.post(f"{server.v1}/feedback", json={"trajectory_id": runs[-1], "rating": -1})
        assert disliked.status_code == 200
        run = other.post(
            f"{server.v1}/chat/completions",
            json={
                "model": "hr-assistant",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
        )
        assert run.status_code == 200
        late = make_trajectory("export-big", 99_999.0, reward=1.0)
        with open_store(server.settings.store) as store:  # a second writer is not blocked either
            store.save(late)
        listed = other.get(f"{server.v1}/trajectories", params={"profile": "export-big", "limit": 1}).json()
        assert listed["total"] == len(runs) + 1 and listed["data"][0]["id"] == late.id
        assert time.monotonic() - started < 10
        assert produced < len(runs)  # the export was still open during all of that
        rest = [json.loads(line) for line in lines if line]
    exported = [first["id"]] + [r["id"] for r in rest]
    assert exported == runs  # as of the first line: the later dislike and the late run are not in it
    now = httpx.get(f"{server.v1}/trajectories/export", params={"profile": "export-big"}).text.splitlines()
    assert len(now) == len(runs) and json.loads(now[-1])["id"] == late.id  # a new export sees both

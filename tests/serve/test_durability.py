"""Durability: a real server under concurrent writes, killed with SIGKILL, loses nothing it acknowledged.

The server process (``python -m agentlm.cli serve`` on a tiny checkpoint) takes agent runs and
feedback from several client threads at once; it is killed mid-load with no warning, then started
again on the same store, which must be intact and hold every run and feedback whose 200 came back.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections import Counter

import httpx
import pytest

from agentlm.processes import free_port, start_server, stop

WRITERS = 4
ACKNOWLEDGED_BEFORE_KILL = 24  # feedbacks


@pytest.mark.slow
def test_kill_9_mid_load_loses_no_acknowledged_run_or_feedback(
    tiny_checkpoint, tmp_path, agentlm_home
) -> None:
    store_path = tmp_path / "store.sqlite3"
    env = {**os.environ, "AGENTLM_STORE": str(store_path), "AGENTLM_HOME": str(agentlm_home)}
    args = ["--model", str(tiny_checkpoint)]
    port = free_port()
    proc, _ = start_server(args, port, env=env, timeout=300, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    runs: list[str] = []  # acknowledged: the server answered 200
    feedback: dict[str, str] = {}  # run id -> the comment of its acknowledged feedback
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def writer(n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in range(10_000):
                try:
                    with lock:
                        counts["in_flight"] += 1
                    body = {
                        "model": "hr-assistant",
                        "messages": [{"role": "user", "content": f"Who is Dana Kim? ({n}.{i})"}],
                        "max_tokens": 4,
                    }
                    reply = http.post("/chat/completions", json=body)
                    assert reply.status_code == 200, reply.text
                    run = reply.json()["agentlm"]["trajectory_id"]
                    with lock:
                        runs.append(run)
                    comment = f"writer {n}, round {i}"
                    fb = http.post("/feedback", json={"trajectory_id": run, "rating": 1, "comment": comment})
                    assert fb.status_code == 200, fb.text
                    with lock:
                        feedback[run] = comment
                except httpx.HTTPError:
                    with lock:
                        counts["cut_off"] += 1  # failed by the kill: never acknowledged
                    return
                finally:
                    with lock:
                        counts["in_flight"] -= 1

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while (
        len(feedback) < ACKNOWLEDGED_BEFORE_KILL or not counts["in_flight"]
    ) and time.monotonic() < deadline:
        assert all(t.is_alive() for t in threads), "a writer failed before the kill"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-load, no shutdown of any kind
    proc.wait(timeout=30)
    for t in threads:
        t.join(timeout=60)
    assert len(feedback) >= ACKNOWLEDGED_BEFORE_KILL, "the load did not get going"
    assert counts["cut_off"] > 0, "nothing was in flight at the kill"

    with sqlite3.connect(store_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = conn.execute("SELECT count(*) FROM trajectories").fetchone()[0]

    port = free_port()
    proc, _ = start_server(args, port, env=env, timeout=300, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
            lost_runs = [r for r in runs if http.get(f"/trajectories/{r}").status_code != 200]
            lost_feedback = [
                r
                for r, comment in feedback.items()
                if (http.get(f"/trajectories/{r}").json().get("feedback") or {}).get("comment") != comment
            ]
            assert http.get("/trajectories", params={"limit": 1}).json()["total"] == stored
            # The restarted server takes new writes on the recovered store.
            assert http.post("/feedback", json={"trajectory_id": runs[0], "rating": -1}).status_code == 200
    finally:
        stop(proc)
    print(
        f"\n{len(runs)} runs and {len(feedback)} feedbacks acknowledged by {WRITERS} writers, "
        f"{counts['cut_off']} requests failed by kill -9; {stored} runs stored; "
        f"lost: {len(lost_runs)} runs, {len(lost_feedback)} feedbacks"
    )
    assert lost_runs == [] and lost_feedback == []

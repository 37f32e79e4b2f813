"""Durability: a real server under concurrent writes, killed with SIGKILL, loses nothing it acknowledged."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import httpx
import pytest

from agentlm.processes import free_port, start_server, stop
from agentlm.serve.store import TrajectoryStore


@pytest.mark.slow
def test_kill_9_mid_load_loses_no_acknowledged_run_or_feedback(
    tiny_checkpoint, tmp_path, agentlm_home
) -> None:
    store_path = tmp_path / "store.sqlite3"
    env = {**os.environ, "AGENTLM_STORE": str(store_path), "AGENTLM_HOME": str(agentlm_home)}
    port = free_port()
    proc, _ = start_server(
        ["--model", str(tiny_checkpoint)], port, env=env, timeout=300, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}/v1"
    acknowledged_runs: list[str] = []
    acknowledged_feedback: list[str] = []
    lock = threading.Lock()
    stop_load = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop_load.is_set():
                try:
                    body = {
                        "model": "hr-assistant",
                        "messages": [{"role": "user", "content": "Who is Dana Kim?"}],
                        "max_tokens": 4,
                    }
                    reply = http.post(f"{base}/chat/completions", json=body)
                    if reply.status_code != 200:
                        continue
                    run = reply.json()["agentlm"]["trajectory_id"]
                    with lock:
                        acknowledged_runs.append(run)
                    fb = http.post(
                        f"{base}/feedback", json={"trajectory_id": run, "rating": 1, "comment": run}
                    )
                    if fb.status_code == 200:
                        with lock:
                            acknowledged_feedback.append(run)
                except httpx.HTTPError:
                    return  # the server is gone

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged_feedback) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-load, no shutdown of any kind
    proc.wait(timeout=30)
    stop_load.set()
    for t in threads:
        t.join(timeout=60)
    stop(proc)
    assert len(acknowledged_feedback) >= 12, "the load did not get going"

    with sqlite3.connect(store_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with TrajectoryStore(store_path) as store:  # what a restarted server opens
        for run in acknowledged_runs:
            assert store.get(run) is not None, f"acknowledged run {run} was lost"
        for run in acknowledged_feedback:
            traj = store.get(run)
            assert traj.feedback is not None and traj.feedback.comment == run, f"feedback on {run} was lost"
    print(f"{len(acknowledged_runs)} runs and {len(acknowledged_feedback)} feedbacks acknowledged, 0 lost")

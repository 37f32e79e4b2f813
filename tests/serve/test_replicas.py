"""Several API replicas on one PostgreSQL store: what one acknowledged any other reads at once, the
export has each run once, and a replica killed with SIGKILL mid-write loses nothing it acknowledged.

Three `agentlm serve` processes (a tiny checkpoint each), as a deployment runs them behind a load
balancer, share a fresh database on the test's PostgreSQL server. Client threads spread agent runs
over them round-robin; a run's feedback goes to the next replica and is read back from the third.
One test, in the order a deployment lives it (the replicas take ~10 s to start on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from waiting import eventually

from agentlm.processes import free_port, start_server, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPLICAS = 3
WRITERS = 6


@dataclass
class Replicas:
    args: list[str]
    env: dict[str, str]
    procs: list[subprocess.Popen | None] = field(default_factory=lambda: [None] * REPLICAS)
    urls: list[str] = field(default_factory=lambda: [""] * REPLICAS)

    def start(self, i: int) -> None:
        port = free_port()
        self.procs[i], _ = start_server(self.args, port, env=self.env, timeout=300, start_new_session=True)
        self.urls[i] = f"http://127.0.0.1:{port}/v1"

    def kill(self, i: int) -> None:
        """SIGKILL, no warning: the replica and anything it started."""
        os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(timeout=30)


@pytest.fixture
def replicas(tiny_checkpoint: Path, postgres_url: str, agentlm_home: Path) -> Iterator[Replicas]:
    env = {**os.environ, "AGENTLM_STORE_URL": postgres_url, "AGENTLM_HOME": str(agentlm_home)}
    env.pop("AGENTLM_STORE", None)
    group = Replicas(["--model", str(tiny_checkpoint)], env)
    starting = [threading.Thread(target=group.start, args=(i,)) for i in range(REPLICAS)]
    for t in starting:  # together, as a deployment's replicas start: the first migrates the store
        t.start()
    for t in starting:
        t.join()
    try:
        assert all(group.procs), "a replica did not start"
        yield group
    finally:
        stopping = [threading.Thread(target=stop, args=(p,)) for p in group.procs if p is not None]
        for t in stopping:
            t.start()
        for t in stopping:
            t.join()


@dataclass
class Ledger:
    """What the replicas acknowledged (a 200 came back), and what failed."""

    runs: list[str] = field(default_factory=list)
    feedback: dict[str, str] = field(default_factory=dict)  # run id -> its feedback's comment
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def write(replicas: Replicas, ledger: Ledger, writer: int, rounds: int, stop_when: threading.Event) -> None:
    """Agent runs and their feedback, each on a different replica; each read back from a third."""
    clients = [httpx.Client(base_url=url, timeout=60) for url in replicas.urls]
    try:
        for i in range(rounds):
            if stop_when.is_set():
                return
            run_on, rate_on, read_on = (clients[(writer + i + k) % REPLICAS] for k in range(3))
            comment = f"writer {writer}, round {i}"
            try:
                body = {
                    "model": "hr-assistant",
                    "messages": [{"role": "user", "content": f"Who is Dana Kim? ({writer}.{i})"}],
                    "max_tokens": 4,
                }
                reply = run_on.post("/chat/completions", json=body)
                reply.raise_for_status()
                run = reply.json()["agentlm"]["trajectory_id"]
                with ledger.lock:
                    ledger.runs.append(run)
                rated = rate_on.post(
                    "/feedback", json={"trajectory_id": run, "rating": 1, "comment": comment}
                )
                rated.raise_for_status()
                with ledger.lock:
                    ledger.feedback[run] = comment
            except httpx.HTTPError as e:  # the killed replica's: never acknowledged
                with ledger.lock:
                    ledger.failed.append(f"{type(e).__name__}: {e}")
                continue
            try:
                read = read_on.get(f"/trajectories/{run}")  # written on one replica, rated on another
            except httpx.HTTPError:
                continue  # the killed replica
            if read.status_code != 200 or read.json()["feedback"]["comment"] != comment:
                with ledger.lock:
                    ledger.failed.append(f"{run} read back without its feedback: {read.json()['feedback']}")
    finally:
        for client in clients:
            client.close()


def missing(url: str, ledger: Ledger) -> list[str]:
    """The acknowledged runs and feedback that `url`'s replica cannot find."""
    lost = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for run in ledger.runs:
            reply = http.get(f"/trajectories/{run}")
            if reply.status_code != 200:
                lost.append(f"run {run}: {reply.status_code}")
            elif (
                run in ledger.feedback
                and (reply.json()["feedback"] or {}).get("comment") != ledger.feedback[run]
            ):
                lost.append(f"feedback on {run}")
    return lost


def test_replicas_share_one_store_export_it_once_and_a_killed_one_loses_nothing(
    replicas: Replicas, tmp_path: Path
) -> None:
    # 1. Writers spread runs and feedback over all three; every replica reads all of it.
    ledger, never = Ledger(), threading.Event()
    writers = [threading.Thread(target=write, args=(replicas, ledger, n, 4, never)) for n in range(WRITERS)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert ledger.failed == []
    assert len(ledger.runs) == len(set(ledger.runs)) == len(ledger.feedback) == WRITERS * 4
    for url in replicas.urls:
        assert missing(url, ledger) == []
        totals = httpx.get(f"{url}/trajectories", params={"limit": 1, "rating": 1}).json()["total"]
        assert totals == WRITERS * 4

    # 2. One export of the shared store: each run once.
    out = tmp_path / "exported.jsonl"
    store = replicas.env["AGENTLM_STORE_URL"]
    command = [
        sys.executable,
        "-m",
        "agentlm.cli",
        "data",
        "export",
        "--store",
        store,
        "--all",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, env=replicas.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    exported = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert f"of {WRITERS * 4} trajectories" in done.stdout
    assert 0 < len(exported) == len(set(exported)) and set(exported) <= set(ledger.runs)

    # 3. kill -9 one replica mid-load: the others go on, and nothing acknowledged is lost.
    stop_writing = threading.Event()
    writers = [
        threading.Thread(target=write, args=(replicas, ledger, n, 10_000, stop_writing), daemon=True)
        for n in range(WRITERS)
    ]
    for t in writers:
        t.start()
    try:
        before = len(ledger.feedback)
        eventually(lambda: len(ledger.feedback) >= before + 6, timeout=120, what="runs before the kill")
        replicas.kill(0)  # its in-flight requests fail, unacknowledged
        at_kill = len(ledger.feedback)
        eventually(
            lambda: len(ledger.feedback) >= at_kill + 6 and len(ledger.failed) > 0,
            timeout=120,
            what="writes after the kill, and the dead replica's requests failing",
        )
    finally:
        stop_writing.set()
        for t in writers:
            t.join(timeout=120)
    assert all("read back without" not in f for f in ledger.failed)
    for url in replicas.urls[1:]:  # the killed replica held nothing of its own
        assert missing(url, ledger) == []

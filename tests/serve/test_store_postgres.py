"""The PostgreSQL store's own behaviour, on a real server (the shared suite is test_store.py):
replicas that start together, migrations, refusals, outages and values it cannot hold."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest
from postgres import PostgresServer
from scripted import scripted_server
from test_store import make_trajectory

from agentlm.agent.trajectory import Feedback
from agentlm.processes import free_port
from agentlm.serve.store import SCHEMA_VERSION, StoreError, StoreInputError, open_store
from agentlm.serve.store import postgres as pg

pytestmark = pytest.mark.postgres


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_replicas_that_start_together_create_the_schema_once(postgres_url: str) -> None:
    opened, failed = [], []
    start = threading.Barrier(6)

    def replica() -> None:
        start.wait()
        try:
            opened.append(open_store(postgres_url))
        except Exception as e:  # noqa: BLE001 - reported below
            failed.append(e)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == [] and len(opened) == 6
    assert query(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    traj = make_trajectory()
    opened[0].save(traj)
    assert all(s.get(traj.id) == traj for s in opened)  # each replica reads what one wrote
    for store in opened:
        store.close()


def test_a_migration_upgrades_a_store_in_place(postgres_url: str, monkeypatch) -> None:
    with open_store(postgres_url) as store:
        kept = [make_trajectory(created_at=float(i)) for i in range(20)]
        for traj in kept:
            store.save(traj)
        store.set_feedback(kept[0].id, Feedback(-1, "wrong"))
    monkeypatch.setattr(
        pg, "MIGRATIONS", {SCHEMA_VERSION + 1: ["ALTER TABLE trajectories ADD COLUMN x TEXT"]}
    )
    monkeypatch.setattr(pg, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with open_store(postgres_url) as store:
        assert [t.id for t in store.snapshot()] == [t.id for t in kept]
        assert store.get(kept[0].id).feedback.comment == "wrong"
    assert query(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]
    assert query(postgres_url, "SELECT count(x) FROM trajectories") == [(0,)]


def test_a_failed_migration_leaves_the_store_as_it_was(postgres_url: str, monkeypatch) -> None:
    with open_store(postgres_url) as store:
        store.save(make_trajectory())
    broken = {
        SCHEMA_VERSION + 1: ["ALTER TABLE trajectories ADD COLUMN x TEXT"],
        SCHEMA_VERSION + 2: ["SELECT nonsense("],
    }
    monkeypatch.setattr(pg, "MIGRATIONS", broken)
    monkeypatch.setattr(pg, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    steps = f"from store schema version {SCHEMA_VERSION} to {SCHEMA_VERSION + 2} failed at step"
    with pytest.raises(StoreError, match=f"{steps} {SCHEMA_VERSION + 2}"):
        open_store(postgres_url)
    # Not even the migration that worked is kept.
    assert query(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    columns = query(
        postgres_url, "SELECT column_name FROM information_schema.columns WHERE column_name = 'x'"
    )
    assert columns == [] and query(postgres_url, "SELECT count(*) FROM trajectories") == [(1,)]


def test_a_store_from_a_newer_agentlm_is_refused_read_only_too(postgres_url: str) -> None:
    open_store(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer AgentLM"):
            open_store(postgres_url, readonly=readonly)
    assert query(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]


def test_a_database_with_a_table_of_that_name_is_refused_untouched(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE trajectories (x INTEGER)")
    with pytest.raises(StoreError, match="not an AgentLM trajectory store"):
        open_store(postgres_url)
    with pytest.raises(StoreError, match="not an AgentLM trajectory store"):
        open_store(postgres_url, readonly=True)
    tables = query(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == [("trajectories",)]


def test_an_unreachable_server_is_named_without_its_password(postgres: PostgresServer) -> None:
    url = f"postgresql://agentlm:s3cret-pw@127.0.0.1:{free_port()}/agentlm"
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach the trajectory store at") as refused:
        open_store(url)
    assert time.monotonic() - started < pg.CONNECT_TIMEOUT + 5
    assert "postgresql://agentlm:***@127.0.0.1" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value) and "PostgreSQL is running" in str(refused.value)


def test_a_restarted_server_is_reconnected_to_and_an_outage_is_a_store_error(
    postgres: PostgresServer, postgres_url: str
) -> None:
    with open_store(postgres_url) as store:
        first = make_trajectory(created_at=1.0)
        store.save(first)
        postgres.stop()
        try:
            with pytest.raises(StoreError, match="did not answer"):
                store.save(make_trajectory())
        finally:
            postgres.start()
        second = make_trajectory(created_at=2.0)
        store.save(second)  # the same store object: its pool reconnects
        assert [t.id for t in store.snapshot()] == [first.id, second.id]


def test_a_value_it_cannot_hold_is_the_callers_error_and_changes_nothing(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        traj = make_trajectory()
        store.save(traj)
        with pytest.raises(StoreInputError, match="NUL|0x00"):
            store.set_feedback(traj.id, Feedback(1, "a comment with \x00 in it"))
        assert store.get(traj.id).feedback is None and store.count(rating=1) == 0
        with pytest.raises(StoreInputError):
            store.get("traj-\x00")


def test_the_api_answers_503_while_the_store_is_away_and_400_for_what_it_cannot_hold(
    postgres: PostgresServer, postgres_url: str
) -> None:
    run = make_trajectory()
    with open_store(postgres_url) as store:
        store.save(run)
    with scripted_server(postgres_url) as (v1, _):
        assert httpx.get(f"{v1}/trajectories/{run.id}").json()["id"] == run.id
        postgres.stop()
        try:
            away = httpx.post(f"{v1}/feedback", json={"trajectory_id": run.id, "rating": 1}, timeout=60)
        finally:
            postgres.start()
        assert away.status_code == 503 and away.headers["retry-after"]
        assert "nothing was recorded" in away.json()["error"]["message"]
        assert "postgresql://agentlm@127.0.0.1" in away.json()["error"]["message"]
        assert httpx.post(f"{v1}/feedback", json={"trajectory_id": run.id, "rating": 1}).status_code == 200
        nul = httpx.get(f"{v1}/trajectories/traj-%00")
        assert nul.status_code == 400 and "NUL" in nul.json()["error"]["message"]
    with open_store(postgres_url) as store:
        assert store.get(run.id).feedback.rating == 1
        assert store.count(rating=1) == 1

"""The sample HR database: deterministic for a seed, believable, with the people the data asks about."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from agentlm.agent.databases.hr import YEAR, build_hr_database, ensure_hr_database

TABLES = (
    "departments",
    "employees",
    "leave_balances",
    "leave_requests",
    "rooms",
    "meetings",
    "meeting_attendees",
    "policies",
)


def dump(path: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


@pytest.fixture(scope="module")
def seed0(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    return dump(build_hr_database(tmp_path_factory.mktemp("hr") / "hr.duckdb", seed=0))


def test_same_seed_same_tables_other_seed_other_data(seed0, tmp_path: Path):
    assert dump(build_hr_database(tmp_path / "again.duckdb", seed=0)) == seed0
    other = dump(build_hr_database(tmp_path / "other.duckdb", seed=1))
    assert other["employees"] != seed0["employees"] and other["departments"] == seed0["departments"]


def test_row_counts_are_plausible(seed0):
    counts = {t: len(rows) for t, rows in seed0.items()}
    assert counts["departments"] == 8 and counts["rooms"] == 10 and counts["policies"] == 6
    assert 50 <= counts["employees"] <= 100
    assert counts["leave_balances"] == 3 * counts["employees"]  # vacation, sick, personal each
    assert counts["employees"] <= counts["leave_requests"] <= 10 * counts["employees"]
    assert 50 <= counts["meetings"] <= 200 and counts["meeting_attendees"] >= 2 * counts["meetings"]


def test_the_people_the_data_asks_about_exist(seed0):
    by_name = {(e[1], e[2]): e for e in seed0["employees"]}
    dana, ben = by_name["Dana", "Kim"], by_name["Ben", "Ortiz"]
    assert dana[5] == "People Partner" and ben[5] == "Engineering Manager"
    assert len(by_name) == len(seed0["employees"]), "names are unique"
    years = {b[1] for b in seed0["leave_balances"]}
    assert years == {YEAR} and any(b[0] == dana[0] and b[2] == "vacation" for b in seed0["leave_balances"])


def test_relations_hold(seed0):
    employees = {e[0]: e for e in seed0["employees"]}
    departments = {d[0] for d in seed0["departments"]}
    rooms = {r[0]: r for r in seed0["rooms"]}
    for e in employees.values():
        assert e[4] in departments
        # A manager works in the same department.
        assert e[6] is None or employees[e[6]][4] == e[4]
    # Used leave equals the approved requests, so questions about either agree.
    approved: dict[tuple[int, str], int] = {}
    for _, emp, kind, start, end, days, status in seed0["leave_requests"]:
        assert emp in employees and start <= end and status in ("approved", "pending", "rejected")
        if status == "approved":
            approved[emp, kind] = approved.get((emp, kind), 0) + days
    for emp, _, kind, entitled, used in seed0["leave_balances"]:
        assert used == approved.get((emp, kind), 0) and entitled >= 3
    attendees: dict[int, int] = {}
    for meeting_id, _ in seed0["meeting_attendees"]:
        attendees[meeting_id] = attendees.get(meeting_id, 0) + 1
    for meeting_id, _, room, organizer, start, end in seed0["meetings"]:
        assert start < end and organizer in employees
        assert 2 <= attendees[meeting_id] <= rooms[room][3], "a meeting fits its room"


def test_ensure_builds_once(tmp_path: Path):
    path = tmp_path / "hr.duckdb"
    path.write_bytes(b"not rebuilt")
    assert ensure_hr_database(path) == path and path.read_bytes() == b"not rebuilt"

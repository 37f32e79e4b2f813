import duckdb

from agentlm.data.hr import build_hr_database

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


def dump(path):
    with duckdb.connect(str(path), read_only=True) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


def test_same_seed_same_database_other_seed_other_data(tmp_path):
    a = dump(build_hr_database(tmp_path / "a.duckdb", seed=0))
    assert a == dump(build_hr_database(tmp_path / "b.duckdb", seed=0))
    assert a["employees"] != dump(build_hr_database(tmp_path / "c.duckdb", seed=1))["employees"]


def test_believable_content(tmp_path):
    data = dump(build_hr_database(tmp_path / "hr.duckdb"))
    assert 50 <= len(data["employees"]) <= 100 and len(data["departments"]) == 8
    assert any(e[1:3] == ("Dana", "Kim") for e in data["employees"])
    # Used leave equals the approved requests, so questions about either agree.
    approved = {}
    for _, emp, kind, _, _, days, status in data["leave_requests"]:
        if status == "approved":
            approved[emp, kind] = approved.get((emp, kind), 0) + days
    for emp, _, kind, entitled, used in data["leave_balances"]:
        assert used == approved.get((emp, kind), 0) and entitled >= 3

"""The sample HR database the HR and scheduling assistants work on.

Deterministic for a seed: the same file content every time, so bundled trajectories (whose answers
were checked by running their SQL) stay right. A few hundred believable rows: departments,
employees, leave balances and requests, meeting rooms, meetings and who attends them, policies.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path

import duckdb

YEAR = 2026  # the leave year the balances are for

SCHEMA = """
CREATE TABLE departments (
    department_id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    location VARCHAR NOT NULL
);
CREATE TABLE employees (
    employee_id INTEGER PRIMARY KEY,
    first_name VARCHAR NOT NULL,
    last_name VARCHAR NOT NULL,
    email VARCHAR NOT NULL,
    department_id INTEGER NOT NULL REFERENCES departments (department_id),
    title VARCHAR NOT NULL,
    manager_id INTEGER,
    hire_date DATE NOT NULL
);
CREATE TABLE leave_balances (
    employee_id INTEGER NOT NULL REFERENCES employees (employee_id),
    year INTEGER NOT NULL,
    leave_type VARCHAR NOT NULL,  -- vacation, sick, personal
    entitled_days INTEGER NOT NULL,
    used_days INTEGER NOT NULL,
    PRIMARY KEY (employee_id, year, leave_type)
);
CREATE TABLE leave_requests (
    request_id INTEGER PRIMARY KEY,
    employee_id INTEGER NOT NULL REFERENCES employees (employee_id),
    leave_type VARCHAR NOT NULL,
    start_date DATE NOT NULL,
    end_date DATE NOT NULL,
    days INTEGER NOT NULL,
    status VARCHAR NOT NULL  -- approved, pending, rejected
);
CREATE TABLE rooms (
    room_id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    floor INTEGER NOT NULL,
    capacity INTEGER NOT NULL
);
CREATE TABLE meetings (
    meeting_id INTEGER PRIMARY KEY,
    title VARCHAR NOT NULL,
    room_id INTEGER NOT NULL REFERENCES rooms (room_id),
    organizer_id INTEGER NOT NULL REFERENCES employees (employee_id),
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL
);
CREATE TABLE meeting_attendees (
    meeting_id INTEGER NOT NULL REFERENCES meetings (meeting_id),
    employee_id INTEGER NOT NULL REFERENCES employees (employee_id),
    PRIMARY KEY (meeting_id, employee_id)
);
CREATE TABLE policies (
    policy_id INTEGER PRIMARY KEY,
    topic VARCHAR NOT NULL,
    text VARCHAR NOT NULL
);
"""

DEPARTMENTS = [
    ("Engineering", "Berlin"),
    ("Sales", "London"),
    ("Marketing", "London"),
    ("Finance", "Zurich"),
    ("People", "Berlin"),
    ("Customer Support", "Lisbon"),
    ("Legal", "Zurich"),
    ("Operations", "Lisbon"),
]
TITLES = {
    "Engineering": ["Software Engineer", "Senior Software Engineer", "Data Engineer", "QA Engineer"],
    "Sales": ["Account Executive", "Sales Representative", "Sales Engineer"],
    "Marketing": ["Marketing Specialist", "Content Writer", "Designer"],
    "Finance": ["Accountant", "Financial Analyst", "Controller"],
    "People": ["HR Generalist", "Recruiter", "People Partner"],
    "Customer Support": ["Support Agent", "Support Specialist"],
    "Legal": ["Legal Counsel", "Paralegal"],
    "Operations": ["Operations Analyst", "Office Manager", "Logistics Coordinator"],
}
FIRST = [
    "Alex",
    "Priya",
    "Jonas",
    "Maria",
    "Chen",
    "Fatima",
    "Lukas",
    "Sofia",
    "Omar",
    "Hannah",
    "Mateo",
    "Aisha",
    "Noah",
    "Elena",
    "Kenji",
    "Grace",
    "Ivan",
    "Leila",
    "Samuel",
    "Mia",
    "Tomas",
    "Nadia",
    "Felix",
    "Yara",
    "Daniel",
    "Chloe",
    "Ravi",
    "Ingrid",
    "Marco",
    "Zoe",
]
LAST = [
    "Schmidt",
    "Patel",
    "Novak",
    "Garcia",
    "Wang",
    "Haddad",
    "Becker",
    "Rossi",
    "Farouk",
    "Meyer",
    "Silva",
    "Khan",
    "Jensen",
    "Petrova",
    "Tanaka",
    "Okafor",
    "Ivanov",
    "Nasser",
    "Brown",
    "Costa",
    "Larsen",
    "Moreau",
    "Fischer",
    "Dubois",
    "Murphy",
    "Kowalski",
    "Santos",
    "Nguyen",
    "Weber",
    "Ali",
]
# People the bundled trajectories and the README ask about: fixed, whatever the seed draws.
FIXED_PEOPLE = [
    ("Dana", "Kim", "People", "People Partner"),
    ("Ben", "Ortiz", "Engineering", "Engineering Manager"),
]
ROOMS = [
    ("Atlas", 1, 4),
    ("Boreal", 1, 8),
    ("Cedar", 2, 6),
    ("Delta", 2, 12),
    ("Ember", 3, 4),
    ("Fjord", 3, 10),
    ("Granite", 4, 20),
    ("Harbor", 4, 6),
    ("Iris", 5, 4),
    ("Juniper", 5, 16),
]
ENTITLEMENT = {"vacation": 25, "sick": 10, "personal": 3}
POLICIES = [
    (
        "vacation",
        "Full-time employees are entitled to 25 vacation days per calendar year. Up to 5 unused days carry over to the next year and expire on March 31.",
    ),
    (
        "sick leave",
        "Employees have 10 paid sick days per year. A doctor's note is required from the fourth consecutive sick day.",
    ),
    (
        "personal days",
        "Three personal days per year may be taken for moving, family events or similar reasons. They do not carry over.",
    ),
    (
        "leave requests",
        "Leave must be requested in the HR system at least two weeks in advance for periods longer than three days. The direct manager approves or rejects the request.",
    ),
    (
        "remote work",
        "Employees may work remotely up to three days per week after agreement with their manager.",
    ),
    (
        "meeting rooms",
        "Rooms are booked through the scheduling assistant. Bookings longer than four hours need approval from Operations.",
    ),
]
MEETING_TITLES = [
    "Weekly sync",
    "Sprint planning",
    "Quarterly review",
    "1:1",
    "Customer call",
    "Hiring panel",
    "Budget review",
    "Design critique",
    "Retro",
    "All-hands prep",
    "Onboarding",
    "Roadmap discussion",
]


def _workdays(start: dt.date, days: int) -> dt.date:
    """The last day of a leave of `days` working days starting on `start` (a weekday)."""
    d, left = start, days - 1
    while left > 0:
        d += dt.timedelta(days=1)
        if d.weekday() < 5:
            left -= 1
    return d


def company_rows(seed: int) -> dict[str, list[tuple]]:
    rng = random.Random(seed)
    departments = [(i + 1, name, loc) for i, (name, loc) in enumerate(DEPARTMENTS)]
    dept_id = {name: i for i, name, _ in departments}

    people: list[tuple[str, str, str, str]] = []
    names = {(first, last) for first, last, _, _ in FIXED_PEOPLE}
    while len(people) < 58:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if (first, last) in names:
            continue
        names.add((first, last))
        dept = rng.choice(DEPARTMENTS)[0]
        people.append((first, last, dept, rng.choice(TITLES[dept])))
    people[6:6] = FIXED_PEOPLE[:1]
    people[20:20] = FIXED_PEOPLE[1:]

    employees = []
    first_in_dept: dict[str, int] = {}
    for i, (first, last, dept, title) in enumerate(people, start=1):
        manager = first_in_dept.get(dept)
        first_in_dept.setdefault(dept, i)
        hired = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 11))
        email = f"{first.lower()}.{last.lower()}@example.com"
        employees.append((i, first, last, email, dept_id[dept], title, manager, hired))

    requests, used = [], {}
    request_id = 1
    for emp in employees:
        for leave_type, count in (
            ("vacation", rng.randint(0, 4)),
            ("sick", rng.randint(0, 2)),
            ("personal", rng.randint(0, 1)),
        ):
            for _ in range(count):
                start = dt.date(YEAR, 1, 5) + dt.timedelta(days=rng.randrange(0, 330))
                while start.weekday() >= 5:
                    start += dt.timedelta(days=1)
                days = rng.randint(1, 5) if leave_type == "vacation" else 1
                status = rng.choices(["approved", "pending", "rejected"], weights=[7, 2, 1])[0]
                requests.append((request_id, emp[0], leave_type, start, _workdays(start, days), days, status))
                request_id += 1
                if status == "approved":
                    used[emp[0], leave_type] = used.get((emp[0], leave_type), 0) + days
    balances = [
        (emp[0], YEAR, leave_type, entitled, used.get((emp[0], leave_type), 0))
        for emp in employees
        for leave_type, entitled in ENTITLEMENT.items()
    ]

    rooms = [(i + 1, name, floor, cap) for i, (name, floor, cap) in enumerate(ROOMS)]
    meetings, attendees = [], []
    for meeting_id in range(1, 91):
        day = dt.date(YEAR, 11, 30) + dt.timedelta(days=rng.randrange(0, 21))
        while day.weekday() >= 5:
            day += dt.timedelta(days=1)
        start = dt.datetime.combine(day, dt.time(rng.randint(8, 16), rng.choice([0, 30])))
        end = start + dt.timedelta(minutes=rng.choice([30, 60, 90]))
        room = rng.choice(rooms)
        organizer = rng.choice(employees)[0]
        meetings.append((meeting_id, rng.choice(MEETING_TITLES), room[0], organizer, start, end))
        others = rng.sample([e[0] for e in employees if e[0] != organizer], rng.randint(1, room[3] - 1))
        attendees.extend((meeting_id, e) for e in sorted([organizer, *others]))
    policies = [(i + 1, topic, text) for i, (topic, text) in enumerate(POLICIES)]
    return {
        "departments": departments,
        "employees": employees,
        "leave_balances": balances,
        "leave_requests": requests,
        "rooms": rooms,
        "meetings": meetings,
        "meeting_attendees": attendees,
        "policies": policies,
    }


def write_database(path: str | Path, schema: str, rows: dict[str, list[tuple]]) -> Path:
    """Create a DuckDB file at `path` from `schema` and each table's rows, replacing it atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with duckdb.connect(str(tmp)) as conn:
        conn.execute(schema)
        for table, table_rows in rows.items():
            placeholders = ", ".join("?" * len(table_rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({placeholders})", table_rows)
        conn.execute("CHECKPOINT")
    os.replace(tmp, path)
    return path


def build_hr_database(path: str | Path, seed: int = 0) -> Path:
    """Write the sample HR database to `path` (replacing it atomically) and return the path."""
    return write_database(path, SCHEMA, company_rows(seed))


def ensure_hr_database(path: str | Path, seed: int = 0) -> Path:
    """Build the sample database unless it is already there."""
    path = Path(path)
    return path if path.is_file() else build_hr_database(path, seed)

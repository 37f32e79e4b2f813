"""Fresh companies for training data: the sample HR company with other people, teams and rooms.

The assistants' training questions must not be answerable by memorising one table, and the
sample databases the product ships (seed 0, ``agent/databases/hr.py``) are what its held-out questions ask
about. So training uses *worlds*: the sample generator's structure (who manages whom, leave
requests, meetings) under a new seed, renamed from name pools that share no first name, last name,
department or room with the shipped sample, with meetings moved by whole weeks and policies
reworded with other numbers.

A world writes both databases, with the shipped schemas, so the profiles' prompts are the same.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

from agentlm.agent.databases import hr, scheduling

FIRST = [
    "Amara",
    "Bjorn",
    "Carmen",
    "Dmitri",
    "Esther",
    "Farid",
    "Greta",
    "Hiro",
    "Isla",
    "Jamal",
    "Katya",
    "Liam",
    "Mei",
    "Nikolai",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Stefan",
    "Tara",
    "Umar",
    "Vera",
    "Wendell",
    "Ximena",
    "Yusuf",
    "Zara",
    "Anton",
    "Beatriz",
    "Cyrus",
    "Delia",
    "Emil",
    "Frida",
    "Gustav",
    "Helga",
    "Idris",
    "Jana",
    "Kofi",
    "Lena",
    "Milan",
    "Nora",
    "Oskar",
    "Paula",
    "Rafael",
    "Selma",
    "Theo",
    "Ulla",
    "Viktor",
    "Wanda",
]
LAST = [
    "Abara",
    "Bauer",
    "Castillo",
    "Dahl",
    "Eriksen",
    "Ferreira",
    "Gruber",
    "Hoffmann",
    "Iqbal",
    "Jovanovic",
    "Kaur",
    "Lindqvist",
    "Mendes",
    "Nakamura",
    "Oyelaran",
    "Popescu",
    "Quinlan",
    "Reyes",
    "Sato",
    "Takahashi",
    "Ulrich",
    "Vargas",
    "Wojcik",
    "Xu",
    "Yilmaz",
    "Zimmer",
    "Andersen",
    "Bianchi",
    "Cohen",
    "Dimitrov",
    "Esposito",
    "Fontaine",
    "Horvat",
    "Ishikawa",
    "Janssen",
    "Keller",
    "Lopez",
    "Mazur",
    "Nilsen",
    "Olsen",
    "Park",
    "Romano",
    "Sorensen",
    "Torres",
    "Varga",
    "Weiss",
]
DEPARTMENTS = (
    ("Research", "Munich"),
    ("Product", "Paris"),
    ("Procurement", "Vienna"),
    ("Security", "Dublin"),
    ("Data Science", "Amsterdam"),
    ("Facilities", "Madrid"),
    ("Quality", "Prague"),
    ("Partnerships", "Oslo"),
    ("Design", "Copenhagen"),
    ("Treasury", "Milan"),
    ("Recruiting", "Warsaw"),
    ("Infrastructure", "Helsinki"),
)
ROOMS = [
    "Aurora",
    "Basalt",
    "Cobalt",
    "Dune",
    "Elm",
    "Falcon",
    "Glacier",
    "Heron",
    "Indigo",
    "Jade",
    "Kestrel",
    "Lagoon",
    "Maple",
    "Nebula",
    "Onyx",
    "Pine",
    "Quartz",
    "Raven",
    "Sierra",
    "Tundra",
    "Umber",
    "Vega",
    "Willow",
    "Yarrow",
    "Zenith",
]
POLICY_TEMPLATES = {
    "vacation": "Full-time employees are entitled to {vac} vacation days per calendar year. Up to {carry} unused days carry over to the next year and expire on {expiry}.",
    "sick leave": "Employees have {sick} paid sick days per year. A doctor's note is required from the {note} consecutive sick day.",
    "personal days": "{personal_word} personal days per year may be taken for moving, family events or similar reasons. They do not carry over.",
    "leave requests": "Leave must be requested in the HR system at least {notice} weeks in advance for periods longer than {long} days. The direct manager approves or rejects the request.",
    "remote work": "Employees may work remotely up to {remote} days per week after agreement with their manager.",
    "meeting rooms": "Rooms are booked through the scheduling assistant. Bookings longer than {hours} hours need approval from {approver}.",
    "parental leave": "Parents may take up to {parental} weeks of paid parental leave within the first year after a birth or adoption.",
    "expenses": "Travel expenses are reimbursed within {expense_days} days of submitting receipts; meals are covered up to {meal} euros per day.",
    "training": "Every employee has a training budget of {training} euros per year for courses and conferences, approved by their manager.",
}
ORDINALS = ("second", "third", "fourth", "fifth")
NUMBER_WORDS = ("Two", "Three", "Four", "Five")


@dataclass
class World:
    """One generated company: its rows (HR layout) and where its two databases are."""

    seed: int
    rows: dict[str, list[tuple]]
    hr_db: Path
    scheduling_db: Path

    @property
    def employees(self) -> list[tuple]:
        return self.rows["employees"]

    def department(self, department_id: int) -> tuple:
        return next(d for d in self.rows["departments"] if d[0] == department_id)

    def employee(self, employee_id: int) -> tuple:
        return next(e for e in self.employees if e[0] == employee_id)


def world_rows(seed: int) -> dict[str, list[tuple]]:
    """The sample company's rows for `seed`, renamed from this module's pools."""
    rng = random.Random(f"world-{seed}")
    rows = hr.company_rows(seed)
    names = rng.sample([(f, last) for f in FIRST for last in LAST], len(rows["employees"]))
    depts = rng.sample(DEPARTMENTS, len(rows["departments"]))
    rows["departments"] = [(d[0], *depts[i]) for i, d in enumerate(rows["departments"])]
    rows["employees"] = [
        (e[0], first, last, f"{first.lower()}.{last.lower()}@example.com", *e[4:])
        for e, (first, last) in zip(rows["employees"], names, strict=True)
    ]
    room_names = rng.sample(ROOMS, len(rows["rooms"]))
    rows["rooms"] = [(r[0], room_names[i], r[2], r[3]) for i, r in enumerate(rows["rooms"])]
    shift = dt.timedelta(weeks=rng.randint(-6, 6))
    rows["meetings"] = [(m[0], m[1], m[2], m[3], m[4] + shift, m[5] + shift) for m in rows["meetings"]]
    values = {
        "vac": rng.choice([20, 24, 25, 26, 28, 30]),
        "carry": rng.randint(2, 10),
        "expiry": rng.choice(["March 31", "April 30", "June 30"]),
        "sick": rng.choice([8, 10, 12, 15]),
        "note": rng.choice(ORDINALS),
        "personal_word": rng.choice(NUMBER_WORDS),
        "notice": rng.randint(1, 4),
        "long": rng.randint(2, 5),
        "remote": rng.randint(1, 4),
        "hours": rng.choice([2, 3, 4, 6]),
        "approver": rng.choice(["Operations", "Facilities", "the office manager"]),
        "parental": rng.choice([12, 14, 16, 20]),
        "expense_days": rng.choice([10, 14, 30]),
        "meal": rng.choice([30, 40, 50]),
        "training": rng.choice([500, 1000, 1500, 2000]),
    }
    topics = rng.sample(sorted(POLICY_TEMPLATES), rng.randint(5, len(POLICY_TEMPLATES)))
    rows["policies"] = [(i + 1, t, POLICY_TEMPLATES[t].format(**values)) for i, t in enumerate(topics)]
    return rows


def build_world(seed: int, folder: str | Path) -> World:
    """Write world `seed`'s HR and scheduling databases into `folder`."""
    folder = Path(folder)
    rows = world_rows(seed)
    hr_db = hr.write_database(folder / f"world{seed}-hr.duckdb", hr.SCHEMA, rows)
    sched_db = hr.write_database(
        folder / f"world{seed}-scheduling.duckdb", scheduling.SCHEMA, scheduling.scheduling_rows(rows)
    )
    return World(seed, rows, hr_db, sched_db)

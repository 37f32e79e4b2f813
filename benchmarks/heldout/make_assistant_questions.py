"""Write the held-out assistant evaluation: questions graded from the data, and tool-calling requests.

The questions are written here by hand, each with the gold SQL that answers it on the sample
databases the server ships (seed 0). This script builds those databases in a temporary directory,
runs every gold query with DuckDB and turns its rows into the concrete ``expect`` spec that
``benchmarks/assistant.py`` grades with, so no expected value is typed in by hand:

- an answer's values come from the rows (names, counts, dates, rooms);
- a policy answer's phrase is checked to be in the policy text;
- an unanswerable question's query must confirm that the data lacks it (a count of 0);
- a booking's query must confirm that the room is free, and the expected write names its room and time;
- filing leave: the query finds the employee and their days left, and the expected write is a
  pending request of that type, for those dates.

The tool-calling requests (``tool_calls.jsonl``) need no database: their functions, messages and
expected calls are written out below.

    .venv/bin/python benchmarks/heldout/make_assistant_questions.py [--out-dir benchmarks/heldout]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.databases.scheduling import build_scheduling_database

HR = "hr-assistant"
SCHED = "scheduling-assistant"

Rows = list[tuple]
Expect = dict[str, Any]
Alternatives = str | list[str]  # one string, or several of which one must appear


@dataclass
class Turn:
    question: str
    sql: str  # the gold query, run on the profile's database
    expect: Callable[[Rows], Expect]  # its rows -> the grading spec


@dataclass
class Item:
    id: str
    profile: str
    category: str
    turns: list[Turn]


# --- turning rows into expected strings --------------------------------------------------------
def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def date_forms(d: dt.date) -> list[str]:
    """The ways an answer may write a date: ISO, and the month spelled out or abbreviated."""
    month, short, day, year = d.strftime("%B"), d.strftime("%b"), d.day, d.year
    forms = [
        d.isoformat(),
        f"{month} {day}, {year}",
        f"{month} {day} {year}",
        f"{day} {month} {year}",
        f"{month} {_ordinal(day)}, {year}",
        f"{month} {_ordinal(day)} {year}",
        f"{_ordinal(day)} {month} {year}",
        f"{_ordinal(day)} of {month} {year}",
        f"{short} {day}, {year}",
        f"{day} {short} {year}",
    ]
    return list(dict.fromkeys(forms))


def time_forms(t: dt.time) -> list[str]:
    """A clock time as 24-hour (with and without the leading zero) or 12-hour text."""
    hour12 = t.hour % 12 or 12
    half = "am" if t.hour < 12 else "pm"
    forms = [t.strftime("%H:%M"), f"{t.hour}:{t.minute:02d}", f"{hour12}:{t.minute:02d} {half}"]
    forms.append(f"{hour12}:{t.minute:02d}{half}")
    if t.minute == 0:
        forms += [f"{hour12} {half}", f"{hour12}{half}"]
    return list(dict.fromkeys(forms))


def text(value: Any) -> Alternatives:
    """One cell as the text (or the alternatives) an answer must contain."""
    if isinstance(value, dt.datetime):
        return time_forms(value.time())
    if isinstance(value, dt.date):
        return date_forms(value)
    if isinstance(value, float):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return str(value)


def single(rows: Rows) -> tuple:
    assert len(rows) == 1, f"expected one row, got {rows}"
    return rows[0]


def one(rows: Rows) -> Expect:
    """Exactly one row; each of its cells must appear."""
    return {"all": [text(v) for v in single(rows)]}


def top(rows: Rows) -> Expect:
    """The first row of an ORDER BY ... DESC query, which must beat the runner-up (no tie)."""
    assert len(rows) >= 2 and rows[0][-1] != rows[1][-1], f"no unique top row: {rows[:3]}"
    return {"all": [text(v) for v in rows[0]]}


def top_name(rows: Rows) -> Expect:
    """The top row's first cell (a name) only; its other cells are what it is ranked by."""
    return {"all": top(rows)["all"][:1]}


def phrase(*alternatives: str) -> Callable[[Rows], Expect]:
    """A policy answer: one of the phrases must appear, and the first must be in the policy text."""

    def expect(rows: Rows) -> Expect:
        (policy,) = single(rows)
        assert alternatives[0].lower() in policy.lower(), f"{alternatives[0]!r} is not in {policy!r}"
        return {"all": [list(alternatives)]}

    return expect


def absent(rows: Rows) -> Expect:
    """An unanswerable question: the query confirms that the data has nothing (a count of 0)."""
    assert rows == [(0,)], f"the data has it after all: {rows}"
    return {"refusal": True}


FREE = ["free", "available", "no meetings", "no meeting", "not busy", "isn't busy", "nothing"]
BUSY = ["busy", "not free", "isn't free", "not available", "has a meeting", "has meetings", "booked"]


def free_or_busy(rows: Rows) -> Expect:
    """Is a person (or room) free, from the meetings in the interval? Graded on the state, not on
    "yes"/"no" (whose meaning depends on whether the question asked "free?" or "busy?")."""
    if not rows:
        return {"any": FREE, "none": ["not free", "isn't free", "is busy", "has a meeting", "is booked"]}
    titles = list(dict.fromkeys(row[0] for row in rows))
    return {
        "any": [*BUSY, *titles],
        "none": ["is free", "is available", "not busy", "isn't busy", "no meetings"],
    }


def room_taken(room: str) -> Callable[[Rows], Expect]:
    """A room asked about for a slot it is not free in: rows are the meetings in the way."""

    def expect(rows: Rows) -> Expect:
        assert rows, f"{room} is free after all"
        titles = [row[0] for row in rows]
        return {
            "any": ["no", "not free", "isn't free", "booked", "occupied", "taken", *titles],
            "none": [f"{room} is free", f"{room} is available", "yes"],
        }

    return expect


def booking(start: str, end: str) -> Callable[[Rows], Expect]:
    """A booking: the query lists the rooms that fit (free, big enough); the INSERT must name one."""

    def expect(rows: Rows) -> Expect:
        assert rows, "no room fits: the booking cannot be made"
        rooms = [str(v) for row in rows for v in row]  # each room's id and name
        return {"pending_write": {"all": ["INSERT INTO meetings", start, end], "any": rooms}}

    return expect


def leave_filing(kind: str, start: str, end: str) -> Callable[[Rows], Expect]:
    """Filing leave: the query finds the employee (id, first name) and the days they have left; the
    INSERT must be a pending request of that kind and those dates, for that employee."""

    def expect(rows: Rows) -> Expect:
        employee_id, first, left = single(rows)
        assert left > 0, f"{first} has no {kind} days left"
        return {
            "pending_write": {
                "all": ["INSERT INTO leave_requests", kind, start, end, "pending"],
                "any": [str(employee_id), first],
            }
        }

    return expect


def leave_left_sql(first: str, last: str, kind: str) -> str:
    return (
        "SELECT e.employee_id, e.first_name, b.entitled_days - b.used_days FROM leave_balances b "
        f"JOIN employees e USING (employee_id) WHERE e.first_name = '{first}' AND e.last_name = '{last}' "
        f"AND b.leave_type = '{kind}' AND b.year = 2026"
    )


def free_room_sql(start: str, end: str, seats: int, room: str | None = None) -> str:
    where = f" WHERE name = '{room}'" if room else ""
    return f"SELECT room_id, name FROM free_rooms('{start}', '{end}', {seats}){where}"


def no_column(*patterns: str) -> str:
    """Counts the columns whose name looks like the thing asked for (0: the data does not have it)."""
    likes = " OR ".join(f"column_name ILIKE '%{p}%'" for p in patterns)
    return f"SELECT count(*) FROM information_schema.columns WHERE {likes}"


def names_only(rows: Rows) -> Expect:
    return {"all": [row[0] for row in rows]}


PERSON = "e.first_name || ' ' || e.last_name"
BALANCE = (
    "SELECT b.entitled_days - b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
    "WHERE e.first_name = '{first}' AND e.last_name = '{last}' AND b.leave_type = '{kind}' AND b.year = 2026"
)
POLICY = "SELECT text FROM policies WHERE topic = '{topic}'"


def balance(first: str, last: str, kind: str) -> str:
    return BALANCE.format(first=first, last=last, kind=kind)


# --- the HR assistant --------------------------------------------------------------------------
# The question tables stay one entry per block, as written (not reflowed by the formatter).
# fmt: off
HR_ITEMS = [
    # look-ups
    Item("hr-title-priya", HR, "lookup", [Turn(
        "What is Priya's job title?",
        "SELECT title FROM employees WHERE first_name = 'Priya'", one)]),
    Item("hr-email-kenji", HR, "lookup", [Turn(
        "what's the email address for kenji okafor?",
        "SELECT email FROM employees WHERE first_name = 'Kenji' AND last_name = 'Okafor'", one)]),
    Item("hr-dept-hannah-khan", HR, "lookup", [Turn(
        "Which department is Hannah Khan in?",
        "SELECT d.name FROM employees e JOIN departments d USING (department_id) "
        "WHERE e.first_name = 'Hannah' AND e.last_name = 'Khan'", one)]),
    Item("hr-hired-lukas-dubois", HR, "lookup", [Turn(
        "When was Lukas Dubois hired?",
        "SELECT hire_date FROM employees WHERE first_name = 'Lukas' AND last_name = 'Dubois'", one)]),
    Item("hr-finance-location", HR, "lookup", [Turn(
        "Where is the Finance department located?",
        "SELECT location FROM departments WHERE name = 'Finance'", one)]),
    Item("hr-title-marco", HR, "lookup", [Turn(
        "Could you tell me what Marco does here? His title, I mean.",
        "SELECT title FROM employees WHERE first_name = 'Marco'", one)]),
    # counts
    Item("hr-count-all", HR, "count", [Turn(
        "How many employees does the company have in total?",
        "SELECT count(*) FROM employees", one)]),
    Item("hr-count-support", HR, "count", [Turn(
        "how many people are in customer support",
        "SELECT count(*) FROM employees e JOIN departments d USING (department_id) "
        "WHERE d.name = 'Customer Support'", one)]),
    Item("hr-count-swe", HR, "count", [Turn(
        "How many Software Engineers do we employ? Only the plain title, not senior ones.",
        "SELECT count(*) FROM employees WHERE title = 'Software Engineer'", one)]),
    Item("hr-count-hired-2022", HR, "count", [Turn(
        "How many of our current staff were hired during 2022?",
        "SELECT count(*) FROM employees WHERE year(hire_date) = 2022", one)]),
    Item("hr-count-pending-requests", HR, "leave_request", [Turn(
        "How many leave requests are waiting for a decision right now?",
        "SELECT count(*) FROM leave_requests WHERE status = 'pending'", one)]),
    Item("hr-count-rejected-vacation", HR, "leave_request", [Turn(
        "How many vacation requests got rejected this year?",
        "SELECT count(*) FROM leave_requests WHERE status = 'rejected' AND leave_type = 'vacation' "
        "AND year(start_date) = 2026", one)]),
    Item("hr-count-lisbon", HR, "join", [Turn(
        "How many employees are based in Lisbon?",
        "SELECT count(*) FROM employees e JOIN departments d USING (department_id) "
        "WHERE d.location = 'Lisbon'", one)]),
    # aggregates
    Item("hr-avg-vacation-used", HR, "aggregate", [Turn(
        "On average, how many vacation days has each employee used so far in 2026?",
        "SELECT avg(used_days) FROM leave_balances WHERE leave_type = 'vacation' AND year = 2026", one)]),
    Item("hr-sum-approved-vacation", HR, "aggregate", [Turn(
        "What's the total number of vacation days in approved requests across the whole company?",
        "SELECT sum(days) FROM leave_requests WHERE status = 'approved' AND leave_type = 'vacation'", one)]),
    Item("hr-max-room", HR, "aggregate", [Turn(
        "Which is our biggest meeting room, and how many people does it hold?",
        "SELECT name, capacity FROM rooms ORDER BY capacity DESC", top)]),
    Item("hr-longest-tenure", HR, "aggregate", [Turn(
        "Who has been with the company the longest?",
        f"SELECT {PERSON}, -epoch(e.hire_date) FROM employees e ORDER BY 2 DESC", top_name)]),
    Item("hr-newest-engineer", HR, "aggregate", [Turn(
        "Who's the most recent hire in Engineering, and when did they start?",
        f"SELECT {PERSON}, e.hire_date, epoch(e.hire_date) FROM employees e JOIN departments d "
        "USING (department_id) WHERE d.name = 'Engineering' ORDER BY 3 DESC",
        lambda rows: {"all": top(rows)["all"][:2]})]),
    Item("hr-most-leave-used", HR, "aggregate", [Turn(
        "Counting vacation, sick and personal days together, who has used the most leave in 2026?",
        f"SELECT {PERSON}, sum(b.used_days) FROM leave_balances b JOIN employees e USING (employee_id) "
        "WHERE b.year = 2026 GROUP BY 1 ORDER BY 2 DESC", top)]),
    Item("hr-dept-avg-vacation", HR, "aggregate", [Turn(
        "Which department has used the most vacation days per person on average, and what's the average?",
        "SELECT d.name, avg(b.used_days) FROM leave_balances b JOIN employees e USING (employee_id) "
        "JOIN departments d USING (department_id) WHERE b.leave_type = 'vacation' AND b.year = 2026 "
        "GROUP BY d.name ORDER BY 2 DESC", top)]),
    Item("hr-min-vacation-left", HR, "aggregate", [Turn(
        "What is the fewest vacation days anyone still has left for 2026?",
        "SELECT min(entitled_days - used_days) FROM leave_balances WHERE leave_type = 'vacation' "
        "AND year = 2026", one)]),
    Item("hr-most-staffed-dept", HR, "aggregate", [Turn(
        "Which department has the most employees?",
        "SELECT d.name, count(*) FROM employees e JOIN departments d USING (department_id) "
        "GROUP BY d.name ORDER BY 2 DESC", top_name)]),
    # joins
    Item("hr-manager-mateo-petrova", HR, "join", [Turn(
        "Who is Mateo Petrova's manager?",
        f"SELECT {PERSON} FROM employees e JOIN employees r ON r.manager_id = e.employee_id "
        "WHERE r.first_name = 'Mateo' AND r.last_name = 'Petrova'", one)]),
    Item("hr-city-jonas-costa", HR, "join", [Turn(
        "In which city does Jonas Costa work?",
        "SELECT d.location FROM employees e JOIN departments d USING (department_id) "
        "WHERE e.first_name = 'Jonas' AND e.last_name = 'Costa'", one)]),
    Item("hr-reports-omar-ivanov", HR, "join", [Turn(
        "List everyone who reports directly to Omar Ivanov.",
        f"SELECT {PERSON} FROM employees e JOIN employees m ON e.manager_id = m.employee_id "
        "WHERE m.first_name = 'Omar' AND m.last_name = 'Ivanov' ORDER BY 1", names_only)]),
    Item("hr-legal-members", HR, "join", [Turn(
        "Who are the members of the Legal department?",
        f"SELECT {PERSON} FROM employees e JOIN departments d USING (department_id) "
        "WHERE d.name = 'Legal' ORDER BY 1", names_only)]),
    # leave days left
    Item("hr-left-yara-novak", HR, "leave_balance", [Turn(
        "How many vacation days does Yara Novak have left?", balance("Yara", "Novak", "vacation"), one)]),
    Item("hr-left-felix-rossi-sick", HR, "leave_balance", [Turn(
        "how many sick days has felix rossi got remaining", balance("Felix", "Rossi", "sick"), one)]),
    Item("hr-left-chloe-costa-personal", HR, "leave_balance", [Turn(
        "Does Chloe Costa still have personal days available this year? How many?",
        balance("Chloe", "Costa", "personal"), one)]),
    Item("hr-left-sofia", HR, "leave_balance", [Turn(
        "Sofia wants to know how many vacaton days she's got left.",
        "SELECT b.entitled_days - b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
        "WHERE e.first_name = 'Sofia' AND b.leave_type = 'vacation' AND b.year = 2026", one)]),
    # leave requests
    Item("hr-request-zoe-brown", HR, "leave_request", [Turn(
        "When does Zoe Brown's pending vacation request start?",
        "SELECT r.start_date FROM leave_requests r JOIN employees e USING (employee_id) "
        "WHERE e.first_name = 'Zoe' AND e.last_name = 'Brown' AND r.status = 'pending' "
        "AND r.leave_type = 'vacation'", one)]),
    Item("hr-request-five-day-pending", HR, "leave_request", [Turn(
        "Which employees have a pending vacation request for 5 days?",
        f"SELECT {PERSON} FROM leave_requests r JOIN employees e USING (employee_id) "
        "WHERE r.status = 'pending' AND r.leave_type = 'vacation' AND r.days = 5 ORDER BY 1", names_only)]),
    Item("hr-file-vacation-mateo-costa", HR, "leave_request", [Turn(
        "Please file a vacation request for Mateo Costa from 2026-08-03 to 2026-08-07.",
        leave_left_sql("Mateo", "Costa", "vacation"), leave_filing("vacation", "2026-08-03", "2026-08-07"))]),
    Item("hr-file-sick-hannah-khan", HR, "leave_request", [Turn(
        "hannah khan is off sick on monday 2026-12-07, can you put that in for her? just the one day",
        leave_left_sql("Hannah", "Khan", "sick"), leave_filing("sick", "2026-12-07", "2026-12-07"))]),
    # policies
    Item("hr-policy-carry-over", HR, "policy", [Turn(
        "How many unused vacation days can I carry over into next year?",
        POLICY.format(topic="vacation"), phrase("5", "five"))]),
    Item("hr-policy-doctor-note", HR, "policy", [Turn(
        "From which sick day on do I need a doctor's note?",
        POLICY.format(topic="sick leave"), phrase("fourth", "4th", "4"))]),
    Item("hr-policy-notice", HR, "policy", [Turn(
        "I want to take a week and a half off. How far in advance do I have to ask?",
        POLICY.format(topic="leave requests"), phrase("two weeks", "2 weeks", "14 days"))]),
    Item("hr-policy-remote", HR, "policy", [Turn(
        "What's the remote work policy — how many days a week can I work from home?",
        POLICY.format(topic="remote work"), phrase("three days", "3 days"))]),
    Item("hr-policy-personal-carry", HR, "policy", [Turn(
        "Do personal days carry over if I don't use them?",
        POLICY.format(topic="personal days"),
        phrase("do not carry over", "don't carry over", "not carry over", "cannot be carried",
               "can't be carried", "not be carried", "no"))]),
    Item("hr-policy-long-booking", HR, "policy", [Turn(
        "Who has to approve a room booking that runs longer than four hours?",
        POLICY.format(topic="meeting rooms"), phrase("Operations"))]),
    # unanswerable
    Item("hr-unans-salary", HR, "unanswerable", [Turn(
        "What is Grace Tanaka's salary?", no_column("salary", "pay", "wage", "compensation"), absent)]),
    Item("hr-unans-address", HR, "unanswerable", [Turn(
        "What's Hannah Nasser's home address?", no_column("address", "street", "postal", "zip"), absent)]),
    Item("hr-unans-unknown-person", HR, "unanswerable", [Turn(
        "How many vacation days does Priya Patel have left?",
        "SELECT count(*) FROM employees WHERE first_name = 'Priya' AND last_name = 'Patel'", absent)]),
    Item("hr-unans-phone", HR, "unanswerable", [Turn(
        "Can you give me Marco Moreau's phone number?", no_column("phone", "mobile", "tel"), absent)]),
    Item("hr-unans-rating", HR, "unanswerable", [Turn(
        "What performance rating did Ingrid Fischer get last review cycle?",
        no_column("rating", "review", "performance", "score"), absent)]),
    # follow-ups
    Item("hr-follow-manager-joined", HR, "follow_up", [
        Turn("Who is Yara Silva's manager?",
             f"SELECT {PERSON} FROM employees e JOIN employees r ON r.manager_id = e.employee_id "
             "WHERE r.first_name = 'Yara' AND r.last_name = 'Silva'", one),
        Turn("And when did that person join the company?",
             "SELECT e.hire_date FROM employees e JOIN employees r ON r.manager_id = e.employee_id "
             "WHERE r.first_name = 'Yara' AND r.last_name = 'Silva'", one),
    ]),
    Item("hr-follow-dept-city", HR, "follow_up", [
        Turn("Which department is Ravi Garcia in?",
             "SELECT d.name FROM employees e JOIN departments d USING (department_id) "
             "WHERE e.first_name = 'Ravi' AND e.last_name = 'Garcia'", one),
        Turn("where is that department based?",
             "SELECT d.location FROM employees e JOIN departments d USING (department_id) "
             "WHERE e.first_name = 'Ravi' AND e.last_name = 'Garcia'", one),
    ]),
    Item("hr-follow-used-left", HR, "follow_up", [
        Turn("How many vacation days has Mateo Costa used this year?",
             "SELECT b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
             "WHERE e.first_name = 'Mateo' AND e.last_name = 'Costa' AND b.leave_type = 'vacation' "
             "AND b.year = 2026", one),
        Turn("So how many does he have left?", balance("Mateo", "Costa", "vacation"), one),
    ]),
    Item("hr-follow-finance-first", HR, "follow_up", [
        Turn("Who works in Finance?",
             f"SELECT {PERSON} FROM employees e JOIN departments d USING (department_id) "
             "WHERE d.name = 'Finance' ORDER BY 1", names_only),
        Turn("Which of them was hired first?",
             f"SELECT {PERSON}, -epoch(e.hire_date) FROM employees e JOIN departments d "
             "USING (department_id) WHERE d.name = 'Finance' ORDER BY 2 DESC", top_name),
    ]),
    Item("hr-follow-remote-agree", HR, "follow_up", [
        Turn("What does the remote work policy say?", POLICY.format(topic="remote work"),
             phrase("three days", "3 days")),
        Turn("Who do I need to agree that with?", POLICY.format(topic="remote work"), phrase("manager")),
    ]),
    Item("hr-follow-pending-sum", HR, "follow_up", [
        Turn("Does Lukas Haddad have any pending leave requests? How many?",
             "SELECT count(*) FROM leave_requests r JOIN employees e USING (employee_id) "
             "WHERE e.first_name = 'Lukas' AND e.last_name = 'Haddad' AND r.status = 'pending'", one),
        Turn("How many days do they add up to?",
             "SELECT sum(r.days) FROM leave_requests r JOIN employees e USING (employee_id) "
             "WHERE e.first_name = 'Lukas' AND e.last_name = 'Haddad' AND r.status = 'pending'", one),
    ]),
    Item("hr-follow-title-salary", HR, "follow_up", [
        Turn("What's Samuel Larsen's title?",
             "SELECT title FROM employees WHERE first_name = 'Samuel' AND last_name = 'Larsen'", one),
        Turn("And how much does he earn?", no_column("salary", "pay", "wage", "compensation"), absent),
    ]),
]

# --- the scheduling assistant ------------------------------------------------------------------
SCHED_ITEMS = [
    # free rooms
    Item("sched-free-dec4", SCHED, "free_rooms", [Turn(
        "Which rooms are free on 2026-12-04 from 14:00 to 15:00?",
        "SELECT name FROM free_rooms('2026-12-04 14:00', '2026-12-04 15:00', 1)", names_only)]),
    Item("sched-free-8-people", SCHED, "free_rooms", [Turn(
        "I need a room for 8 people on December 7th 2026, 1pm to 2pm. What's available?",
        "SELECT name FROM free_rooms('2026-12-07 13:00', '2026-12-07 14:00', 8)", names_only)]),
    Item("sched-free-15-seats", SCHED, "free_rooms", [Turn(
        "is there any room with 15+ seats free on 2026-12-15 between 8:30 and 9:00?",
        "SELECT name FROM free_rooms('2026-12-15 08:30', '2026-12-15 09:00', 15)", names_only)]),
    Item("sched-cedar-taken", SCHED, "free_rooms", [Turn(
        "Is Cedar free on 2026-12-14 at 13:30 for half an hour?",
        "SELECT m.title FROM meetings m JOIN rooms r USING (room_id) WHERE r.name = 'Cedar' "
        "AND m.start_time < TIMESTAMP '2026-12-14 14:00' AND m.end_time > TIMESTAMP '2026-12-14 13:30'",
        room_taken("Cedar"))]),
    # busy / free people
    Item("sched-busy-chloe-costa", SCHED, "busy", [Turn(
        "Is Chloe Costa free on 2026-12-14 between 12:00 and 13:00?",
        "SELECT title FROM busy('Chloe Costa', '2026-12-14 12:00', '2026-12-14 13:00')", free_or_busy)]),
    Item("sched-busy-omar-khan", SCHED, "busy", [Turn(
        "Is Omar Khan busy on 2026-12-10 between 9:00 and 10:00?",
        "SELECT title FROM busy('Omar Khan', '2026-12-10 09:00', '2026-12-10 10:00')", free_or_busy)]),
    Item("sched-busy-ivan", SCHED, "busy", [Turn(
        "does ivan kowalski have anything on 2026-12-21 from 10:00 to 12:00?",
        "SELECT title FROM busy('Ivan Kowalski', '2026-12-21 10:00', '2026-12-21 12:00')", free_or_busy)]),
    Item("sched-grace-day", SCHED, "busy", [Turn(
        "What meetings does Grace Tanaka have on December 15, 2026?",
        "SELECT DISTINCT title FROM busy('Grace Tanaka', '2026-12-15 00:00', '2026-12-16 00:00')",
        names_only)]),
    # look-ups, counts, aggregates
    Item("sched-seats-juniper", SCHED, "lookup", [Turn(
        "How many seats does Juniper have?", "SELECT seats FROM rooms WHERE name = 'Juniper'", one)]),
    Item("sched-floor-harbor", SCHED, "lookup", [Turn(
        "Which floor is the Harbor room on?", "SELECT floor FROM rooms WHERE name = 'Harbor'", one)]),
    Item("sched-team-kenji", SCHED, "lookup", [Turn(
        "What team is Kenji on?", "SELECT team FROM people WHERE name LIKE 'Kenji %'", one)]),
    Item("sched-floor5-rooms", SCHED, "lookup", [Turn(
        "Which rooms are on the fifth floor?", "SELECT name FROM rooms WHERE floor = 5 ORDER BY 1",
        names_only)]),
    Item("sched-count-dec14", SCHED, "count", [Turn(
        "How many meetings are booked on 2026-12-14?",
        "SELECT count(*) FROM meetings WHERE CAST(start_time AS DATE) = DATE '2026-12-14'", one)]),
    Item("sched-organizer-fjord-panel", SCHED, "lookup", [Turn(
        "Who organised the hiring panel in Fjord on 15 December 2026?",
        "SELECT p.name FROM meetings m JOIN people p ON p.person_id = m.organizer_id "
        "JOIN rooms r USING (room_id) WHERE r.name = 'Fjord' AND m.title = 'Hiring panel' "
        "AND CAST(m.start_time AS DATE) = DATE '2026-12-15'", one)]),
    Item("sched-attendees-weekly-sync", SCHED, "count", [Turn(
        "How many people are invited to the Weekly sync in Granite on 2026-12-07?",
        "SELECT count(*) FROM meeting_attendees a JOIN meetings m USING (meeting_id) "
        "JOIN rooms r USING (room_id) WHERE m.title = 'Weekly sync' AND r.name = 'Granite' "
        "AND CAST(m.start_time AS DATE) = DATE '2026-12-07'", one)]),
    Item("sched-busiest-room", SCHED, "aggregate", [Turn(
        "Which room has the most meetings booked in the calendar?",
        "SELECT r.name, count(*) FROM meetings m JOIN rooms r USING (room_id) GROUP BY r.name ORDER BY 2 DESC",
        top_name)]),
    Item("sched-first-dec21", SCHED, "aggregate", [Turn(
        "When does the first meeting on 2026-12-21 start, and in which room?",
        "SELECT m.start_time, r.name, -epoch(m.start_time) FROM meetings m JOIN rooms r USING (room_id) "
        "WHERE CAST(m.start_time AS DATE) = DATE '2026-12-21' ORDER BY 3 DESC",
        lambda rows: {"all": top(rows)["all"][:2]})]),
    Item("sched-count-organized-mateo-okafor", SCHED, "count", [Turn(
        "how many meetings is Mateo Okafor organizing?",
        "SELECT count(*) FROM meetings m JOIN people p ON p.person_id = m.organizer_id "
        "WHERE p.name = 'Mateo Okafor'", one)]),
    Item("sched-fjord-earliest-dec16", SCHED, "aggregate", [Turn(
        "what's the earliest time Fjord is booked on dec 16 2026?",
        "SELECT min(m.start_time) FROM meetings m JOIN rooms r USING (room_id) WHERE r.name = 'Fjord' "
        "AND CAST(m.start_time AS DATE) = DATE '2026-12-16'", one)]),
    # bookings
    Item("sched-book-fjord", SCHED, "booking", [Turn(
        "Book Fjord for a 'Vendor demo' on 2026-12-09 from 15:00 to 16:00, organised by Chen Meyer.",
        free_room_sql("2026-12-09 15:00", "2026-12-09 16:00", 1, "Fjord"),
        booking("2026-12-09 15:00", "2026-12-09 16:00"))]),
    Item("sched-book-delta", SCHED, "booking", [Turn(
        "Could you reserve Delta on 2026-12-10 10:00-11:00 for a meeting called 'Contract review'? "
        "Mia Garcia is the organizer.",
        free_room_sql("2026-12-10 10:00", "2026-12-10 11:00", 1, "Delta"),
        booking("2026-12-10 10:00", "2026-12-10 11:00"))]),
    Item("sched-book-atlas-12h", SCHED, "booking", [Turn(
        "please book the atlas room on dec 16 2026 from 2pm to 3pm for a 1:1, sofia schmidt is organising",
        free_room_sql("2026-12-16 14:00", "2026-12-16 15:00", 1, "Atlas"),
        booking("2026-12-16 14:00", "2026-12-16 15:00"))]),
    Item("sched-book-any-10", SCHED, "booking", [Turn(
        "Book any room with at least 10 seats for Jonas Novak's 'Team offsite planning' on 2026-12-18 "
        "from 10:00 to 11:00.",
        free_room_sql("2026-12-18 10:00", "2026-12-18 11:00", 10),
        booking("2026-12-18 10:00", "2026-12-18 11:00"))]),
    # unanswerable
    Item("sched-unans-no-room", SCHED, "unanswerable", [Turn(
        "Is the Everest room free on 2026-12-09 at 10:00?",
        "SELECT count(*) FROM rooms WHERE name ILIKE '%everest%'", absent)]),
    Item("sched-unans-wifi", SCHED, "unanswerable", [Turn(
        "What's the wifi password in Granite?", no_column("wifi", "password", "network"), absent)]),
    Item("sched-unans-no-person", SCHED, "unanswerable", [Turn(
        "Is Priya Patel free on 2026-12-08 at 11:00?",
        "SELECT count(*) FROM people WHERE name = 'Priya Patel'", absent)]),
    # follow-ups
    Item("sched-follow-free-biggest", SCHED, "follow_up", [
        Turn("Which rooms with at least 10 seats are free on 2026-12-11 from 12:00 to 13:00?",
             "SELECT name FROM free_rooms('2026-12-11 12:00', '2026-12-11 13:00', 10)", names_only),
        Turn("And which of those is the biggest?",
             "SELECT name, seats FROM free_rooms('2026-12-11 12:00', '2026-12-11 13:00', 10) ORDER BY seats DESC",
             top_name),
    ]),
    Item("sched-follow-organizer-team", SCHED, "follow_up", [
        Turn("Who organises the Budget review on 2026-12-17?",
             "SELECT p.name FROM meetings m JOIN people p ON p.person_id = m.organizer_id "
             "WHERE m.title = 'Budget review' AND CAST(m.start_time AS DATE) = DATE '2026-12-17'", one),
        Turn("Which team is he on?",
             "SELECT p.team FROM meetings m JOIN people p ON p.person_id = m.organizer_id "
             "WHERE m.title = 'Budget review' AND CAST(m.start_time AS DATE) = DATE '2026-12-17'", one),
    ]),
    Item("sched-follow-room-seats", SCHED, "follow_up", [
        Turn("What room is the Design critique on 2026-12-18 in?",
             "SELECT r.name FROM meetings m JOIN rooms r USING (room_id) "
             "WHERE m.title = 'Design critique' AND CAST(m.start_time AS DATE) = DATE '2026-12-18'", one),
        Turn("how many seats does it have?",
             "SELECT r.seats FROM meetings m JOIN rooms r USING (room_id) "
             "WHERE m.title = 'Design critique' AND CAST(m.start_time AS DATE) = DATE '2026-12-18'", one),
    ]),
    Item("sched-follow-leila-busy", SCHED, "follow_up", [
        Turn("Is Leila Petrova busy on 2026-12-04 between 15:00 and 17:00?",
             "SELECT title FROM busy('Leila Petrova', '2026-12-04 15:00', '2026-12-04 17:00')", free_or_busy),
        Turn("What about on 2026-12-09 at the same time?",
             "SELECT title FROM busy('Leila Petrova', '2026-12-09 15:00', '2026-12-09 17:00')", free_or_busy),
    ]),
    Item("sched-follow-check-then-book", SCHED, "follow_up", [
        Turn("Is Boreal free on 2026-12-08 from 14:00 to 15:00?",
             "SELECT title FROM meetings m JOIN rooms r USING (room_id) WHERE r.name = 'Boreal' "
             "AND m.start_time < TIMESTAMP '2026-12-08 15:00' AND m.end_time > TIMESTAMP '2026-12-08 14:00'",
             free_or_busy),
        Turn("Great, book it then: 'Design sync', organised by Lukas Santos.",
             free_room_sql("2026-12-08 14:00", "2026-12-08 15:00", 1, "Boreal"),
             booking("2026-12-08 14:00", "2026-12-08 15:00")),
    ]),
]
# fmt: on

# --- tool calling: functions, requests and the calls expected -----------------------------------
DEPARTMENTS = [
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "People",
    "Customer Support",
    "Legal",
    "Operations",
]
LEAVE_TYPES = ["vacation", "sick", "personal"]
TIME = "Local time as 'YYYY-MM-DD HH:MM'."


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


TOOLS = {
    "get_employee": _function(
        "get_employee",
        "Look up an employee's record: title, department, manager, email, hire date.",
        {"name": {"type": "string", "description": "The employee's full name."}},
        ["name"],
    ),
    "get_leave_balance": _function(
        "get_leave_balance",
        "Days of leave an employee has left in a leave year.",
        {
            "name": {"type": "string", "description": "The employee's full name."},
            "leave_type": {"type": "string", "enum": LEAVE_TYPES},
            "year": {"type": "integer", "description": "The leave year.", "default": 2026},
        },
        ["name", "leave_type"],
    ),
    "list_department_members": _function(
        "list_department_members",
        "Everyone who works in a department.",
        {"department": {"type": "string", "enum": DEPARTMENTS}},
        ["department"],
    ),
    "find_free_rooms": _function(
        "find_free_rooms",
        "Meeting rooms with no booking in the interval and at least min_seats seats.",
        {
            "start": {"type": "string", "description": TIME},
            "end": {"type": "string", "description": TIME},
            "min_seats": {"type": "integer", "minimum": 1, "default": 1},
        },
        ["start", "end"],
    ),
    "book_room": _function(
        "book_room",
        "Book a meeting room (held until the requester approves).",
        {
            "room": {"type": "string", "description": "The room's name."},
            "start": {"type": "string", "description": TIME},
            "end": {"type": "string", "description": TIME},
            "title": {"type": "string", "description": "The meeting's title."},
        },
        ["room", "start", "end", "title"],
    ),
    "submit_leave_request": _function(
        "submit_leave_request",
        "File a leave request for an employee; their manager approves it.",
        {
            "name": {"type": "string", "description": "The employee's full name."},
            "leave_type": {"type": "string", "enum": LEAVE_TYPES},
            "start_date": {"type": "string", "description": "First day off, 'YYYY-MM-DD'."},
            "end_date": {"type": "string", "description": "Last day off, 'YYYY-MM-DD'."},
        },
        ["name", "leave_type", "start_date", "end_date"],
    ),
    "get_policy": _function(
        "get_policy",
        "The text of an HR policy.",
        {
            "topic": {
                "type": "string",
                "enum": [
                    "vacation",
                    "sick leave",
                    "personal days",
                    "leave requests",
                    "remote work",
                    "meeting rooms",
                ],
            }
        },
        ["topic"],
    ),
    "get_weather": _function(
        "get_weather",
        "Current weather for a city.",
        {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        ["city"],
    ),
}
ALL = list(TOOLS)
HR_TOOLS = [
    "get_employee",
    "get_leave_balance",
    "list_department_members",
    "submit_leave_request",
    "get_policy",
]
ROOM_TOOLS = ["find_free_rooms", "book_room", "get_employee"]
SYSTEM = {
    "role": "system",
    "content": "You are the company's HR and scheduling assistant. Use the tools to answer.",
}


def call(function: str, /, **arguments: Any) -> dict[str, Any]:
    return {"name": function, "arguments": arguments}


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def after(question: str, first: dict[str, Any], result: Any, call_id: str = "call_1") -> list[dict[str, Any]]:
    """A conversation in which the model already made `first` and got `result` back."""
    return [
        SYSTEM,
        user(question),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": first["name"], "arguments": json.dumps(first["arguments"])},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)},
    ]


# (id, tool names offered, messages, expected calls)
# fmt: off
TOOL_ITEMS: list[tuple[str, list[str], list[dict[str, Any]], list[dict[str, Any]]]] = [
    # one call
    ("tc-employee-priya", ALL, [user("Who is Priya Ivanov? I need her title.")],
     [call("get_employee", name="Priya Ivanov")]),
    ("tc-employee-casual", HR_TOOLS, [SYSTEM, user("pull up the record for kenji okafor pls")],
     [call("get_employee", name="Kenji Okafor")]),
    ("tc-balance-vacation", HR_TOOLS, [user("How many vacation days does Yara Novak have left?")],
     [call("get_leave_balance", name="Yara Novak", leave_type="vacation")]),
    ("tc-balance-year", ALL, [user("Sick days remaining for Felix Rossi in the 2026 leave year?")],
     [call("get_leave_balance", name="Felix Rossi", leave_type="sick", year=2026)]),
    ("tc-balance-personal", HR_TOOLS, [SYSTEM, user("Has Chloe Costa got any personal days left?")],
     [call("get_leave_balance", name="Chloe Costa", leave_type="personal")]),
    ("tc-members-legal", ALL, [user("List everyone in the Legal department.")],
     [call("list_department_members", department="Legal")]),
    ("tc-members-support", HR_TOOLS, [user("who's on the customer support team?")],
     [call("list_department_members", department="Customer Support")]),
    ("tc-free-rooms", ROOM_TOOLS, [user("Which rooms are free on 2026-12-04 from 14:00 to 15:00?")],
     [call("find_free_rooms", start="2026-12-04 14:00", end="2026-12-04 15:00")]),
    ("tc-free-rooms-seats", ALL,
     [SYSTEM, user("I need a room for 12 people on 2026-12-07 between 13:00 and 14:00.")],
     [call("find_free_rooms", start="2026-12-07 13:00", end="2026-12-07 14:00", min_seats=12)]),
    ("tc-book", ROOM_TOOLS,
     [user("Book Fjord for 'Vendor demo' on 2026-12-09 from 15:00 to 16:00.")],
     [call("book_room", room="Fjord", start="2026-12-09 15:00", end="2026-12-09 16:00", title="Vendor demo")]),
    ("tc-book-12h", ALL,
     [SYSTEM, user("Please reserve Atlas on 2026-12-16 from 2pm to 3pm for a meeting titled 'Budget check'.")],
     [call("book_room", room="Atlas", start="2026-12-16 14:00", end="2026-12-16 15:00", title="Budget check")]),
    ("tc-leave-request", HR_TOOLS,
     [user("File a vacation request for Mateo Costa from 2026-08-03 to 2026-08-07.")],
     [call("submit_leave_request", name="Mateo Costa", leave_type="vacation",
           start_date="2026-08-03", end_date="2026-08-07")]),
    ("tc-leave-request-sick", ALL,
     [SYSTEM, user("Zoe Brown is off sick on 2026-03-02, just that one day. Please log it.")],
     [call("submit_leave_request", name="Zoe Brown", leave_type="sick",
           start_date="2026-03-02", end_date="2026-03-02")]),
    ("tc-policy-remote", HR_TOOLS, [user("What's our policy on working remotely?")],
     [call("get_policy", topic="remote work")]),
    ("tc-policy-carry", ALL, [user("Can unused vacation days be carried over? Check the policy.")],
     [call("get_policy", topic="vacation")]),
    ("tc-weather", ALL, [user("What's the weather like in Lisbon right now?")],
     [call("get_weather", city="Lisbon")]),
    ("tc-weather-f", ALL, [user("Weather in Zurich, in fahrenheit please.")],
     [call("get_weather", city="Zurich", unit="fahrenheit")]),
    ("tc-employee-only-tool", ["get_employee", "get_weather"],
     [user("When did Lukas Dubois join us?")],
     [call("get_employee", name="Lukas Dubois")]),
    # two calls in one reply
    ("tc-two-balances", HR_TOOLS,
     [user("How many vacation days do Yara Novak and Mateo Costa each have left?")],
     [call("get_leave_balance", name="Yara Novak", leave_type="vacation"),
      call("get_leave_balance", name="Mateo Costa", leave_type="vacation")]),
    ("tc-two-departments", ALL, [SYSTEM, user("Who works in Finance, and who works in Legal?")],
     [call("list_department_members", department="Finance"),
      call("list_department_members", department="Legal")]),
    ("tc-two-weather", ALL, [user("Compare the weather in Berlin and London.")],
     [call("get_weather", city="Berlin"), call("get_weather", city="London")]),
    ("tc-two-employees", HR_TOOLS, [user("Look up both Hannah Khan and Ivan Kowalski for me.")],
     [call("get_employee", name="Hannah Khan"), call("get_employee", name="Ivan Kowalski")]),
    ("tc-two-kinds", HR_TOOLS,
     [SYSTEM, user("For Samuel Larsen: how many sick days and how many personal days are left?")],
     [call("get_leave_balance", name="Samuel Larsen", leave_type="sick"),
      call("get_leave_balance", name="Samuel Larsen", leave_type="personal")]),
    ("tc-two-slots", ROOM_TOOLS,
     [user("Any free rooms on 2026-12-14 from 09:00 to 10:00? And the same on 2026-12-15?")],
     [call("find_free_rooms", start="2026-12-14 09:00", end="2026-12-14 10:00"),
      call("find_free_rooms", start="2026-12-15 09:00", end="2026-12-15 10:00")]),
    # the second call, after the first one's result
    ("tc-then-book", ROOM_TOOLS,
     after("Find a free room for 6 on 2026-12-10 from 10:00 to 11:00 and book the smallest one for 'Sync'.",
           call("find_free_rooms", start="2026-12-10 10:00", end="2026-12-10 11:00", min_seats=6),
           [{"name": "Harbor", "seats": 6}, {"name": "Delta", "seats": 12}]),
     [call("book_room", room="Harbor", start="2026-12-10 10:00", end="2026-12-10 11:00", title="Sync")]),
    ("tc-then-manager", HR_TOOLS,
     after("Who is Mateo Petrova's manager, and what's that person's email?",
           call("get_employee", name="Mateo Petrova"),
           {"name": "Mateo Petrova", "title": "Software Engineer", "department": "Engineering",
            "manager": "Chloe Ali", "email": "mateo.petrova@example.com"}),
     [call("get_employee", name="Chloe Ali")]),
    ("tc-then-balance", HR_TOOLS,
     after("Take the first person in Marketing and tell me their vacation days left.",
           call("list_department_members", department="Marketing"),
           ["Chen Meyer", "Felix Kowalski", "Lukas Santos", "Jonas Novak", "Chloe Moreau"]),
     [call("get_leave_balance", name="Chen Meyer", leave_type="vacation")]),
    ("tc-then-request", HR_TOOLS,
     after("If Grace Tanaka has at least 3 vacation days left, file vacation for her from 2026-07-06 to 2026-07-08.",
           call("get_leave_balance", name="Grace Tanaka", leave_type="vacation"),
           {"name": "Grace Tanaka", "leave_type": "vacation", "year": 2026, "days_left": 19}),
     [call("submit_leave_request", name="Grace Tanaka", leave_type="vacation",
           start_date="2026-07-06", end_date="2026-07-08")]),
    ("tc-then-weather", ALL,
     after("Which city does Jonas Costa work in, and what's the weather there?",
           call("get_employee", name="Jonas Costa"),
           {"name": "Jonas Costa", "title": "Paralegal", "department": "Legal", "location": "Zurich"}),
     [call("get_weather", city="Zurich")]),
    # no call fits: a plain answer
    ("tc-none-greeting", ALL, [user("Hi! Thanks for your help earlier.")], []),
    ("tc-none-general", HR_TOOLS, [user("What's the capital of France?")], []),
    ("tc-none-after-result", HR_TOOLS,
     after("How many vacation days does Yara Novak have left?",
           call("get_leave_balance", name="Yara Novak", leave_type="vacation"),
           {"name": "Yara Novak", "leave_type": "vacation", "year": 2026, "days_left": 20}),
     []),
    ("tc-none-no-tool", ["get_weather"], [user("Book me a flight to Zurich next Monday.")], []),
    ("tc-none-writing", ALL, [SYSTEM, user("Write a two-line poem about Mondays.")], []),
]
# fmt: on


# --- writing the files ---------------------------------------------------------------------------
def questions(hr_db: Path, sched_db: Path) -> list[dict[str, Any]]:
    """Every item with its turns' expect specs computed from the gold queries."""
    connections = {
        HR: duckdb.connect(str(hr_db), read_only=True),
        SCHED: duckdb.connect(str(sched_db), read_only=True),
    }
    try:
        out = []
        for item in [*HR_ITEMS, *SCHED_ITEMS]:
            conn = connections[item.profile]
            turns = []
            for turn in item.turns:
                try:
                    expect = turn.expect(conn.execute(turn.sql).fetchall())
                except (AssertionError, duckdb.Error) as e:
                    raise SystemExit(f"{item.id}: {turn.question!r}: {e}") from e
                turns.append({"question": turn.question, "expect": expect})
            out.append({"id": item.id, "profile": item.profile, "category": item.category, "turns": turns})
    finally:
        for conn in connections.values():
            conn.close()
    ids = [q["id"] for q in out]
    assert len(ids) == len(set(ids)), "duplicate ids"
    return out


def tool_calls() -> list[dict[str, Any]]:
    ids = [item[0] for item in TOOL_ITEMS]
    assert len(ids) == len(set(ids)), "duplicate ids"
    return [
        {"id": id_, "tools": [TOOLS[name] for name in names], "messages": messages, "expect": expect}
        for id_, names, messages, expect in TOOL_ITEMS
    ]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agentlm-heldout-") as tmp:
        hr_db = build_hr_database(Path(tmp) / "hr.duckdb", seed=0)
        sched_db = build_scheduling_database(Path(tmp) / "scheduling.duckdb", seed=0)
        items = questions(hr_db, sched_db)
    write_jsonl(args.out_dir / "assistant_questions.jsonl", items)
    write_jsonl(args.out_dir / "tool_calls.jsonl", tool_calls())
    two_turn = sum(len(q["turns"]) > 1 for q in items)
    print(
        f"wrote {len(items)} questions ({sum(q['profile'] == HR for q in items)} HR, "
        f"{sum(q['profile'] == SCHED for q in items)} scheduling, {two_turn} follow-ups) and "
        f"{len(TOOL_ITEMS)} tool-calling requests to {args.out_dir}"
    )


if __name__ == "__main__":
    main()

"""The sample scheduling database the scheduling assistant works on.

The same company as the HR sample (people, rooms and the meetings already booked, from
``agent/databases/hr.py`` with the same seed), reshaped for calendars: people, rooms, meetings and who attends
them, plus two availability macros the assistant calls in SQL instead of writing interval logic
each time:

- ``free_rooms(start, finish, min_seats)``: rooms with no meeting overlapping [start, finish);
- ``busy(person, start, finish)``: a person's meetings overlapping [start, finish).

No foreign-key constraints: DuckDB cannot delete a referenced row in the transaction that deleted
its references, and approved changes are applied in one transaction (a cancellation deletes the
attendees, then the meeting). Deterministic for a seed. Bookings are INSERTs into ``meetings`` and ``meeting_attendees``: the
assistant's SQL tool runs them on a scratch copy, and they reach this file only when a person
approves them.
"""

from __future__ import annotations

from pathlib import Path

from agentlm.agent.databases.hr import company_rows, write_database

SCHEMA = """
CREATE TABLE people (
    person_id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,  -- "First Last"
    email VARCHAR NOT NULL,
    team VARCHAR NOT NULL
);
CREATE TABLE rooms (
    room_id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    floor INTEGER NOT NULL,
    seats INTEGER NOT NULL
);
CREATE TABLE meetings (
    meeting_id INTEGER PRIMARY KEY,
    title VARCHAR NOT NULL,
    room_id INTEGER NOT NULL,  -- rooms.room_id
    organizer_id INTEGER NOT NULL,  -- people.person_id
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL,
    CHECK (end_time > start_time)
);
CREATE TABLE meeting_attendees (
    meeting_id INTEGER NOT NULL,  -- meetings.meeting_id
    person_id INTEGER NOT NULL,  -- people.person_id
    PRIMARY KEY (meeting_id, person_id)
);
CREATE MACRO free_rooms(start_at, finish_at, min_seats) AS TABLE
    SELECT r.room_id, r.name, r.floor, r.seats FROM rooms r
    WHERE r.seats >= min_seats AND NOT EXISTS (
        SELECT 1 FROM meetings m WHERE m.room_id = r.room_id
        AND m.start_time < CAST(finish_at AS TIMESTAMP) AND m.end_time > CAST(start_at AS TIMESTAMP))
    ORDER BY r.seats, r.name;
CREATE MACRO busy(person_name, start_at, finish_at) AS TABLE
    SELECT m.meeting_id, m.title, m.start_time, m.end_time FROM meetings m
    JOIN meeting_attendees a USING (meeting_id) JOIN people p ON p.person_id = a.person_id
    WHERE p.name = person_name
    AND m.start_time < CAST(finish_at AS TIMESTAMP) AND m.end_time > CAST(start_at AS TIMESTAMP)
    ORDER BY m.start_time;
"""


def scheduling_rows(hr: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """The calendar view of a company's HR rows (``agent/databases/hr.py`` layout)."""
    team = {d[0]: d[1] for d in hr["departments"]}
    return {
        "people": [(e[0], f"{e[1]} {e[2]}", e[3], team[e[4]]) for e in hr["employees"]],
        "rooms": hr["rooms"],
        "meetings": hr["meetings"],
        "meeting_attendees": hr["meeting_attendees"],
    }


def build_scheduling_database(path: str | Path, seed: int = 0) -> Path:
    """Write the sample scheduling database to `path` (replacing it atomically) and return the path."""
    return write_database(path, SCHEMA, scheduling_rows(company_rows(seed)))


def ensure_scheduling_database(path: str | Path, seed: int = 0) -> Path:
    """Build the sample database unless it is already there."""
    path = Path(path)
    return path if path.is_file() else build_scheduling_database(path, seed)

"""The functions that tool-calling training examples offer (``data/toolcalls.py``): concepts, each
written at random as a function.

A concept (an employee look-up, a leave balance, free rooms, ...) has several names, descriptions
and, for each parameter, several names; `realise` picks one of each, so the same concept reaches the
model as ``lookup_employee(name)`` in one example and ``employee_record(full_name)`` in the next.
A call is written by role (``fn.call(person="Ana Lopez")``) and comes out in the drawn spelling.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

LEAVE_TYPES = ("vacation", "sick", "personal")


@dataclass(frozen=True)
class Param:
    """One parameter of a concept: its role (how examples refer to it) and how it may be written."""

    role: str
    names: tuple[str, ...]
    schema: dict[str, Any]
    descriptions: tuple[str, ...] = ("",)
    required: bool = True


@dataclass(frozen=True)
class Concept:
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    params: tuple[Param, ...]


S = {"type": "string"}
PERSON = ("name", "employee", "full_name", "person", "employee_name")
PERSON_DOC = ("The employee's full name.", "Full name, e.g. 'Ana Lopez'.", "")
WHEN_DOC = ("Date and time, 'YYYY-MM-DD HH:MM'.", "YYYY-MM-DD HH:MM, 24-hour clock.")
DATE_DOC = ("YYYY-MM-DD", "A date as 'YYYY-MM-DD'.")
LEAVE = {"type": "string", "enum": list(LEAVE_TYPES)}


def _person(role: str = "person") -> Param:
    return Param(role, PERSON, S, PERSON_DOC)


POOL: dict[str, Concept] = {
    "employee": Concept(
        ("lookup_employee", "employee_info", "find_employee", "get_person", "employee_record", "fetch_employee"),
        ("An employee's title, department, manager, e-mail, city and start date.",
         "Find an employee by name.", "An employee's details."),
        (_person(),),
    ),
    "balance": Concept(
        ("leave_balance", "remaining_leave", "leave_days_left", "check_leave", "days_off_left"),
        ("How many days of a leave type someone has not used yet.", "Remaining leave days of an employee."),
        (_person(), Param("leave_type", ("leave_type", "type", "kind"), LEAVE),
         Param("year", ("year", "leave_year"), {"type": "integer"}, ("The leave year.", ""), False)),
    ),
    "members": Concept(
        ("team_members", "department_staff", "list_team", "who_is_in", "staff_of"),
        ("The people in a department.", "List the members of a team."),
        (Param("team", ("department", "team", "dept", "group"), S),),
    ),
    "free_rooms": Concept(
        ("available_rooms", "free_rooms", "search_rooms", "room_availability", "open_rooms"),
        ("Rooms nobody has booked for the whole interval.", "Rooms free in an interval."),
        (Param("start", ("start", "from", "start_time", "begin"), S, WHEN_DOC),
         Param("end", ("end", "to", "end_time", "until"), S, WHEN_DOC),
         Param("seats", ("min_seats", "seats", "capacity", "attendees"), {"type": "integer"},
               ("At least this many seats.", ""), False)),
    ),
    "book": Concept(
        ("reserve_room", "create_booking", "schedule_meeting", "hold_room"),
        ("Book a meeting room; the booking waits for approval.", "Reserve a room."),
        (Param("room", ("room", "room_name", "location"), S),
         Param("start", ("start", "from", "start_time"), S, WHEN_DOC),
         Param("end", ("end", "to", "end_time"), S, WHEN_DOC),
         Param("title", ("title", "subject", "topic", "name"), S)),
    ),
    "request_leave": Concept(
        ("file_leave", "request_leave", "create_leave_request", "log_absence", "new_absence"),
        ("Ask for time off for someone; it waits for approval.", "Record an absence."),
        (_person(), Param("leave_type", ("leave_type", "type", "reason"), LEAVE),
         Param("start_date", ("start_date", "from_date", "first_day", "start"), S, DATE_DOC),
         Param("end_date", ("end_date", "to_date", "last_day", "end"), S, DATE_DOC)),
    ),
    "policy": Concept(
        ("search_policies", "policy_text", "hr_policy", "read_policy", "handbook"),
        ("The company's policy on a topic.", "Search the HR policies."),
        (Param("topic", ("topic", "query", "subject", "about"), S),),
    ),
    "weather": Concept(
        ("current_weather", "weather_now", "fetch_weather", "forecast_today"),
        ("Current weather in a city.", "The weather right now."),
        (Param("city", ("city", "location", "place"), S),
         Param("unit", ("unit", "units", "scale"), {"type": "string", "enum": ["celsius", "fahrenheit"]},
               ("",), False)),
    ),
    "convert": Concept(
        ("convert_currency", "exchange", "currency_convert", "fx_convert"),
        ("Convert an amount between currencies.", "Exchange money at today's rate."),
        (Param("amount", ("amount", "value", "sum"), {"type": "number"}),
         Param("from", ("from_currency", "source", "base"), S, ("ISO code, e.g. EUR.", "")),
         Param("to", ("to_currency", "target", "quote"), S, ("ISO code, e.g. USD.", ""))),
    ),
    "message": Concept(
        ("send_message", "notify", "post_message", "message_colleague"),
        ("Send a chat message to a colleague.", "Message someone."),
        (Param("to", ("to", "recipient", "person"), S), Param("text", ("text", "message", "body"), S)),
    ),
    "calendar": Concept(
        ("calendar_events", "get_calendar", "events_on", "agenda"),
        ("A person's events on a day.", "What is on someone's calendar."),
        (_person(), Param("date", ("date", "day", "on"), S, DATE_DOC)),
    ),
    "manager": Concept(
        ("manager_of", "get_manager", "who_manages", "reports_to"),
        ("The manager of an employee.", "Who an employee reports to."),
        (_person(),),
    ),
    "clock": Concept(
        ("local_time", "time_in", "current_time", "world_clock"),
        ("The current local time in a city.", "What time it is somewhere."),
        (Param("city", ("city", "location", "timezone_city"), S),),
    ),
    "task": Concept(
        ("create_task", "add_todo", "new_task", "remind_me"),
        ("Add a task to the to-do list.", "Create a reminder."),
        (Param("title", ("title", "task", "text", "what"), S), Param("due", ("due", "due_date", "date"), S, DATE_DOC)),
    ),
}  # fmt: skip


@dataclass
class Function:
    """A concept written as one function for one example: its name and each role's parameter name."""

    concept: str
    name: str
    params: dict[str, str]  # role -> parameter name
    spec: dict[str, Any]

    def call(self, **by_role: Any) -> dict[str, Any]:
        return {
            "name": self.name,
            "arguments": {self.params[r]: v for r, v in by_role.items() if v is not None},
        }


def realise(concept: str, rng: random.Random) -> Function:
    """`concept` as a function with a name, description and parameter names drawn at random."""
    c = POOL[concept]
    params: dict[str, str] = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in c.params:
        name = rng.choice([n for n in p.names if n not in props] or [p.role])
        schema = dict(p.schema)
        if doc := rng.choice(p.descriptions):
            schema["description"] = doc
        params[p.role], props[name] = name, schema
        if p.required:
            required.append(name)
    parameters = {"type": "object", "properties": props, "required": required}
    spec = {"name": rng.choice(c.names), "description": rng.choice(c.descriptions), "parameters": parameters}
    return Function(concept, spec["name"], params, {"type": "function", "function": spec})

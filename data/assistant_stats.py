"""Assistant tasks that count, sum, average or rank, and questions about one meeting or room.

The HR kinds count people by title, city or hire year; sum and average leave over the company or a
department; find who has the most or least; count and add up leave requests by status and type.
The scheduling kinds ask about one meeting (who organises it, where, who and how many are invited,
when it starts), rank rooms and people by meetings, read a named room's bookings, check whether a
named room is free and book it, and refuse rooms and people the calendar does not have.

Each kind returns a ``Task`` (``data/asktask.py``); ``data/assistant.py`` runs it against a world.
"""

from __future__ import annotations

import random

from agentlm.data.asktask import (
    AssistantDataError,
    Person,
    Rows,
    Step,
    Task,
    how_named,
    number,
    pick,
    some_person,
)
from agentlm.data.hr_tasks import join_words
from agentlm.data.worlds import World

YEAR = 2026
LEAVE_TYPES = ("vacation", "sick", "personal")


def _names(rows: Rows) -> str:
    return join_words([f"{a} {b}" for a, b, *_ in rows])


def _plural(n: object, word: str) -> str:
    if word == "person":
        return f"{number(n)} {'person' if n == 1 else 'people'}"
    return f"{number(n)} {word}{'' if n == 1 else 's'}"


# --- HR ------------------------------------------------------------------------------------------


def count_by(world: World, rng: random.Random) -> Task:
    """How many people have a title, work in a city, or were hired in a year."""
    e = rng.choice(world.employees)
    what = rng.choice(["title", "city", "year"])
    if what == "title":
        title = e[5]
        q = pick(rng, ["How many {t}s do we have?", "How many people have the job title {t}?", "how many {t}s work here",
                       "Number of employees whose title is exactly {t}?", "How many of our staff are {t}s?"], t=title)  # fmt: skip
        sql = f"SELECT count(*) FROM employees WHERE title = '{title}';"
        return Task("hr-assistant", q, [Step(f"I count the employees whose title is exactly {title}.", sql)], "The count is in the result.",
                    lambda r: f"{number(r[0][0])} employees have the title {title}.", "count_title")  # fmt: skip
    if what == "city":
        city = world.department(e[4])[2]
        q = pick(rng, ["How many employees are based in {c}?", "How many people work out of our {c} office?",
                       "headcount in {c}?", "How many staff do we have in {c}?"], c=city)  # fmt: skip
        sql = ("SELECT count(*) FROM employees e JOIN departments d USING (department_id) "
               f"WHERE d.location = '{city}';")  # fmt: skip
        return Task("hr-assistant", q, [Step(f"An employee's city is their department's location; I count employees in departments located in {city}.", sql)],
                    "The count is in the result.", lambda r: f"{number(r[0][0])} employees are based in {city}.", "count_city")  # fmt: skip
    year = e[7].year
    q = pick(rng, ["How many people did we hire in {y}?", "How many of our employees joined during {y}?",
                   "how many hires in {y}", "How many current staff started in {y}?"], y=year)  # fmt: skip
    sql = f"SELECT count(*) FROM employees WHERE hire_date BETWEEN '{year}-01-01' AND '{year}-12-31';"
    return Task("hr-assistant", q, [Step(f"I count employees whose hire_date falls in {year}.", sql)], "The count is in the result.",
                lambda r: f"{number(r[0][0])} employees were hired in {year}.", "count_year")  # fmt: skip


def request_stats(world: World, rng: random.Random) -> Task:
    """Leave requests counted or added up by status and type, or listed by length."""
    status = rng.choice(["pending", "approved", "rejected"])
    leave = rng.choice(["vacation", "vacation", "sick", "personal"])
    choice = rng.randrange(3)
    if choice == 0:
        q = pick(rng, ["How many {t} requests were {s}?", "How many {s} {t} requests do we have?",
                       "count the {t} leave requests that are {s}", "What number of {t} requests have status {s}?"], t=leave, s=status)  # fmt: skip
        sql = f"SELECT count(*) FROM leave_requests WHERE leave_type = '{leave}' AND status = '{status}';"
        return Task("hr-assistant", q, [Step(f"I count leave_requests with leave_type {leave} and status {status}.", sql)],
                    "The count is in the result.", lambda r: f"There are {number(r[0][0])} {status} {leave} requests.", "request_type_count")  # fmt: skip
    if choice == 1:
        q = pick(rng, ["How many days do all {s} {t} requests add up to?", "What's the total number of days in {s} {t} requests?",
                       "sum of days across {s} {t} requests?"], t=leave, s=status)  # fmt: skip
        sql = f"SELECT sum(days) FROM leave_requests WHERE leave_type = '{leave}' AND status = '{status}';"
        return Task("hr-assistant", q, [Step(f"I add up the days of {status} {leave} requests.", sql)], "The total is in the result.",
                    lambda r: f"The {status} {leave} requests add up to {number(r[0][0] or 0)} days.", "request_days")  # fmt: skip
    requests = [r for r in world.rows["leave_requests"] if r[6] == status and r[2] == leave]
    if not requests:
        raise AssistantDataError("no such requests")
    days = rng.choice(requests)[5]
    q = pick(rng, ["Who has a {s} {t} request for {d} days?", "Which employees have {s} {t} requests of {d} days?",
                   "list people with a {d}-day {t} request that is {s}"], s=status, t=leave, d=days)  # fmt: skip
    sql = ("SELECT DISTINCT e.first_name, e.last_name FROM leave_requests r JOIN employees e USING (employee_id) "
           f"WHERE r.status = '{status}' AND r.leave_type = '{leave}' AND r.days = {days} ORDER BY e.last_name, e.first_name;")  # fmt: skip
    return Task("hr-assistant", q, [Step(f"I find employees with a {status} {leave} request whose days is {days}.", sql)], "I have the names.",
                lambda r: f"{_plural(len(r), 'person')} {'has' if len(r) == 1 else 'have'} a {status} {days}-day {leave} request: {_names(r)}.",
                "request_list")  # fmt: skip


def person_requests(world: World, rng: random.Random) -> Task:
    """One person's pending requests: when the next starts, or how many and (follow-up) their days."""
    pending = [r for r in world.rows["leave_requests"] if r[6] == "pending"]
    req = rng.choice(pending)
    e = world.employee(req[1])
    p = Person(e[0], e[1], e[2])
    name, where = how_named(world, rng, p)
    if rng.random() < 0.5:
        leave = req[2]
        q = pick(rng, ["When does {n}'s pending {t} request start?", "What dates is {n}'s pending {t} request for?",
                       "{n} has a {t} request waiting - when is it?"], n=name, t=leave)  # fmt: skip
        sql = ("SELECT r.start_date, r.end_date, r.days FROM leave_requests r JOIN employees e USING (employee_id) "
               f"WHERE {where} AND r.status = 'pending' AND r.leave_type = '{leave}' ORDER BY r.start_date;")  # fmt: skip
        return Task("hr-assistant", q, [Step(f"I look up {p.full}'s pending {leave} requests in leave_requests.", sql)], "I have the dates.",
                    lambda r: f"{p.full}'s pending {leave} request{'s' if len(r) > 1 else ''}: " + join_words([f"{a} to {b} ({number(d)} days)" for a, b, d in r]) + ".",
                    "pending_dates")  # fmt: skip
    q = pick(rng, ["Does {n} have any pending leave requests? How many?", "How many leave requests does {n} have waiting?",
                   "how many pending requests for {n}"], n=name)  # fmt: skip
    sql = ("SELECT count(*) FROM leave_requests r JOIN employees e USING (employee_id) "
           f"WHERE {where} AND r.status = 'pending';")  # fmt: skip
    task = Task("hr-assistant", q, [Step(f"I count {p.full}'s requests with status pending.", sql)], "The count is in the result.",
                lambda r: f"{p.full} has {_plural(r[0][0], 'pending leave request')}.", "pending_count")  # fmt: skip
    follow_sql = ("SELECT sum(r.days) FROM leave_requests r JOIN employees e USING (employee_id) "
                  f"WHERE e.first_name = '{p.first}' AND e.last_name = '{p.last}' AND r.status = 'pending';")  # fmt: skip
    task.follow_up = Task("hr-assistant", rng.choice(["How many days do they add up to?", "And how many days is that in total?",
                                                      "total days?"]),
                          [Step(f"The earlier answer was about {p.full}'s pending requests; I add up their days.", follow_sql)],
                          "The total is in the result.", lambda r: f"{p.full}'s pending requests add up to {number(r[0][0] or 0)} days.", "pending_days")  # fmt: skip
    return task


def leave_stats(world: World, rng: random.Random) -> Task:
    """Averages, totals and extremes of leave over the company or by department."""
    leave = rng.choice(["vacation", "vacation", "sick", "personal"])
    choice = rng.randrange(6)
    if choice == 0:
        q = pick(rng, ["On average, how many {t} days has each employee used in {y}?", "What's the average number of {t} days used per person this year?",
                       "avg {t} days used across the company?"], t=leave, y=YEAR)  # fmt: skip
        sql = f"SELECT round(avg(used_days), 1) FROM leave_balances WHERE leave_type = '{leave}' AND year = {YEAR};"
        return Task("hr-assistant", q, [Step(f"I average used_days over the {YEAR} {leave} balances.", sql)], "The average is in the result.",
                    lambda r: f"Employees have used {number(r[0][0])} {leave} days on average in {YEAR}.", "avg_used")  # fmt: skip
    if choice == 1:
        status = rng.choice(["approved", "pending"])
        q = pick(rng, ["What's the total number of {t} days in {s} requests across the company?", "How many {t} days have been {s} in total?"],
                 t=leave, s=status)  # fmt: skip
        sql = f"SELECT sum(days) FROM leave_requests WHERE leave_type = '{leave}' AND status = '{status}';"
        return Task("hr-assistant", q, [Step(f"I add up days over {status} {leave} requests.", sql)], "The total is in the result.",
                    lambda r: f"{status.capitalize()} {leave} requests add up to {number(r[0][0] or 0)} days.", "total_days")  # fmt: skip
    if choice == 2:
        most = rng.random() < 0.5
        q = (pick(rng, ["What is the most {t} days anyone still has left?", "Who has the most {t} days remaining?"], t=leave) if most
             else pick(rng, ["What is the fewest {t} days anyone has left for {y}?", "Who has the least {t} leave remaining?"], t=leave, y=YEAR))  # fmt: skip
        sql = ("SELECT e.first_name, e.last_name, b.entitled_days - b.used_days AS left_days FROM leave_balances b JOIN employees e USING (employee_id) "
               f"WHERE b.leave_type = '{leave}' AND b.year = {YEAR} ORDER BY left_days {'DESC' if most else 'ASC'}, e.last_name LIMIT 1;")  # fmt: skip
        word = "most" if most else "fewest"
        return Task("hr-assistant", q, [Step(f"Remaining days are entitled_days - used_days; I sort the {YEAR} {leave} balances by them.", sql)],
                    "The first row is the answer.", lambda r: f"{r[0][0]} {r[0][1]} has the {word} {leave} days left: {number(r[0][2])}.", "left_extreme")  # fmt: skip
    if choice == 3:
        q = rng.choice(["Counting vacation, sick and personal days together, who has used the most leave this year?",
                        "Who has taken the most days off in total in 2026?", "who used the most leave overall (all types)?"])  # fmt: skip
        sql = ("SELECT e.first_name, e.last_name, sum(b.used_days) AS total FROM leave_balances b JOIN employees e USING (employee_id) "
               f"WHERE b.year = {YEAR} GROUP BY e.first_name, e.last_name ORDER BY total DESC, e.last_name LIMIT 1;")  # fmt: skip
        return Task("hr-assistant", q, [Step("I add up used_days over all leave types per employee and take the largest.", sql)],
                    "The first row is the answer.", lambda r: f"{r[0][0]} {r[0][1]} has used the most leave in {YEAR}: {number(r[0][2])} days.", "most_leave")  # fmt: skip
    if choice == 4:
        q = pick(rng, ["Which department has used the most {t} days per person on average?", "Which team takes the most {t} days on average, and how many?"], t=leave)  # fmt: skip
        sql = ("SELECT d.name, round(avg(b.used_days), 1) AS average FROM leave_balances b JOIN employees e USING (employee_id) "
               f"JOIN departments d USING (department_id) WHERE b.leave_type = '{leave}' AND b.year = {YEAR} "
               "GROUP BY d.name ORDER BY average DESC, d.name LIMIT 1;")  # fmt: skip
        return Task("hr-assistant", q, [Step(f"I average used {leave} days per department and take the highest.", sql)], "The first row is the answer.",
                    lambda r: f"{r[0][0]} has used the most {leave} days per person: {number(r[0][1])} on average.", "dept_avg_max")  # fmt: skip
    d = rng.choice(world.rows["departments"])
    q = pick(rng, ["How many {t} days has the {d} department used in total this year?", "total {t} days taken by {d}?"], t=leave, d=d[1])  # fmt: skip
    sql = ("SELECT sum(b.used_days) FROM leave_balances b JOIN employees e USING (employee_id) JOIN departments d USING (department_id) "
           f"WHERE d.name = '{d[1]}' AND b.leave_type = '{leave}' AND b.year = {YEAR};")  # fmt: skip
    return Task("hr-assistant", q, [Step(f"I add up used {leave} days over {d[1]}'s employees.", sql)], "The total is in the result.",
                lambda r: f"{d[1]} has used {number(r[0][0] or 0)} {leave} days in {YEAR}.", "dept_sum")  # fmt: skip


def hr_rooms(world: World, rng: random.Random) -> Task:
    """The HR database's rooms table: the largest, or one room's capacity."""
    if rng.random() < 0.5:
        q = rng.choice(["Which is our biggest meeting room, and how many people does it hold?", "What's the largest room we have?",
                        "biggest room and its capacity?"])  # fmt: skip
        sql = "SELECT name, capacity FROM rooms ORDER BY capacity DESC, name LIMIT 1;"
        return Task("hr-assistant", q, [Step("Rooms have a capacity column; I take the largest.", sql)], "The first row is the answer.",
                    lambda r: f"{r[0][0]} is the biggest room; it holds {r[0][1]} people.", "hr_room_max")  # fmt: skip
    room = rng.choice(world.rows["rooms"])
    q = pick(rng, ["How many people fit in {r}?", "What floor is the {r} room on?"], r=room[1])
    column = "capacity" if "fit" in q else "floor"
    sql = f"SELECT {column} FROM rooms WHERE name = '{room[1]}';"
    said = "holds {0} people" if column == "capacity" else "is on floor {0}"
    return Task("hr-assistant", q, [Step(f"I read the room's {column} from rooms.", sql)], "The result has it.",
                lambda r: f"{room[1]} {said.format(r[0][0])}.", "hr_room")  # fmt: skip


def department_first_hire(world: World, rng: random.Random) -> Task:
    """Who works in a department, then (follow-up) which of them was hired first or last."""
    d = rng.choice(world.rows["departments"])
    q = pick(
        rng, ["Who works in {d}?", "Who are the members of the {d} department?", "list the {d} team"], d=d[1]
    )
    sql = ("SELECT e.first_name, e.last_name FROM employees e JOIN departments d USING (department_id) "
           f"WHERE d.name = '{d[1]}' ORDER BY e.last_name, e.first_name;")  # fmt: skip
    task = Task("hr-assistant", q, [Step(f"I list the employees of {d[1]}.", sql)], "I have the names.",
                lambda r: f"{_plural(len(r), 'person')} work in {d[1]}: {_names(r)}.", "dept_members")  # fmt: skip
    first = rng.random() < 0.6
    follow_sql = ("SELECT e.first_name, e.last_name, e.hire_date FROM employees e JOIN departments d USING (department_id) "
                  f"WHERE d.name = '{d[1]}' ORDER BY e.hire_date {'ASC' if first else 'DESC'} LIMIT 1;")  # fmt: skip
    task.follow_up = Task("hr-assistant", rng.choice(["Which of them was hired first?", "who of those has been here longest?"] if first
                                                     else ["Which of them joined most recently?", "and the newest of them?"]),
                          [Step(f"The earlier answer listed {d[1]}; I sort its employees by hire_date.", follow_sql)], "The first row is the answer.",
                          lambda r: f"{r[0][0]} {r[0][1]} joined {d[1]} {'first' if first else 'most recently'}, on {r[0][2]}.", "dept_hire")  # fmt: skip
    return task


# --- scheduling ----------------------------------------------------------------------------------


def _person_name(world: World, person_id: int) -> str:
    e = world.employee(person_id)
    return f"{e[1]} {e[2]}"


def _room(world: World, room_id: int) -> tuple:
    return next(r for r in world.rows["rooms"] if r[0] == room_id)


def _said_day(rng: random.Random, day) -> str:
    return rng.choice([str(day), f"{day.strftime('%B')} {day.day}, {day.year}", f"{day.day} {day.strftime('%B')} {day.year}",
                       f"{day.strftime('%b').lower()} {day.day} {day.year}"])  # fmt: skip


def meeting_facts(world: World, rng: random.Random) -> Task:
    """One meeting, named by title and day (and room where the title repeats that day)."""
    m = rng.choice(world.rows["meetings"])
    day = m[4].date()
    same = [x for x in world.rows["meetings"] if x[1] == m[1] and x[4].date() == day]
    room = _room(world, m[2])[1]
    where = f"m.title = '{m[1]}' AND CAST(m.start_time AS DATE) = '{day}'"
    named = f"the {m[1]} on {_said_day(rng, day)}"
    if len(same) > 1:
        if len([x for x in same if x[2] == m[2]]) > 1:
            raise AssistantDataError("the meeting cannot be named uniquely")
        where += f" AND m.room_id = (SELECT room_id FROM rooms WHERE name = '{room}')"
        named = f"the {m[1]} in {room} on {_said_day(rng, day)}"
    fact = rng.choice(["organizer", "room", "attendees", "count", "start"])
    q_named = named if rng.random() < 0.5 else named.replace(f"the {m[1]}", f"the {m[1].lower()}", 1)
    if fact == "organizer":
        q = pick(rng, ["Who organises {m}?", "Who set up {m}?", "who's the organizer of {m}?"], m=q_named)
        sql = f"SELECT p.name FROM meetings m JOIN people p ON p.person_id = m.organizer_id WHERE {where};"
        task = Task("scheduling-assistant", q, [Step("The organizer is the person whose person_id is the meeting's organizer_id.", sql)],
                    "The result has the organizer.", lambda r: f"{r[0][0]} organises {named}.", "meeting_organizer")  # fmt: skip
        org = _person_name(world, m[3])
        task.follow_up = Task("scheduling-assistant", rng.choice(["Which team is he on?", "What team is that person in?", "and their team?"]),
                              [Step(f"The earlier answer named {org}; I read their team from people.", f"SELECT team FROM people WHERE name = '{org}';")],
                              "The result has the team.", lambda r: f"{org} is on the {r[0][0]} team.", "person_team")  # fmt: skip
        return task
    if fact == "room":
        q = pick(rng, ["What room is {m} in?", "Where is {m}?", "which room is {m} booked in?"], m=q_named)
        sql = f"SELECT r.name FROM meetings m JOIN rooms r USING (room_id) WHERE {where};"
        task = Task("scheduling-assistant", q, [Step("The meeting's room_id points to rooms.", sql)], "The result has the room.",
                    lambda r: f"{named[0].upper() + named[1:]} is in {r[0][0]}.", "meeting_room")  # fmt: skip
        task.follow_up = Task("scheduling-assistant", rng.choice(["How many seats does it have?", "how big is that room?", "Which floor is it on?"]),
                              [Step(f"The earlier answer named {room}; I read it from rooms.", f"SELECT seats, floor FROM rooms WHERE name = '{room}';")],
                              "The result has the room.", lambda r: f"{room} has {r[0][0]} seats, on floor {r[0][1]}.", "room_seats")  # fmt: skip
        return task
    if fact in ("attendees", "count"):
        count = fact == "count"
        q = (pick(rng, ["How many people are invited to {m}?", "How many attendees does {m} have?"], m=q_named) if count
             else pick(rng, ["Who is invited to {m}?", "who's attending {m}?"], m=q_named))  # fmt: skip
        sql = (f"SELECT count(*) FROM meetings m JOIN meeting_attendees a USING (meeting_id) WHERE {where};" if count
               else f"SELECT p.name FROM meetings m JOIN meeting_attendees a USING (meeting_id) JOIN people p ON p.person_id = a.person_id WHERE {where} ORDER BY p.name;")  # fmt: skip
        return Task("scheduling-assistant", q, [Step("Invitations are in meeting_attendees; I join it to the meeting.", sql)], "I have the attendees.",
                    (lambda r: f"{_plural(r[0][0], 'person')} {'is' if r[0][0] == 1 else 'are'} invited to {named}.") if count
                    else (lambda r: f"{_plural(len(r), 'person')} {'is' if len(r) == 1 else 'are'} invited to {named}: "  + join_words([x[0] for x in r]) + "."),
                    "meeting_attendees")  # fmt: skip
    q = pick(rng, ["When does {m} start?", "What time is {m}?"], m=q_named)
    sql = f"SELECT m.start_time, m.end_time FROM meetings m WHERE {where};"
    return Task("scheduling-assistant", q, [Step("I read the meeting's start_time and end_time.", sql)], "I have the times.",
                lambda r: f"{named[0].upper() + named[1:]} runs from {str(r[0][0])[11:16]} to {str(r[0][1])[11:16]}.", "meeting_time")  # fmt: skip


def calendar_stats(world: World, rng: random.Random) -> Task:
    """Rooms and people ranked or counted by their meetings; the first meeting of a day."""
    m = rng.choice(world.rows["meetings"])
    day = m[4].date()
    choice = rng.randrange(5)
    if choice == 0:
        q = rng.choice(
            [
                "Which room has the most meetings booked?",
                "What's the busiest meeting room?",
                "most used room in the calendar?",
            ]
        )
        sql = "SELECT r.name, count(*) AS n FROM meetings m JOIN rooms r USING (room_id) GROUP BY r.name ORDER BY n DESC, r.name LIMIT 1;"
        return Task("scheduling-assistant", q, [Step("I count meetings per room and take the most.", sql)], "The first row is the answer.",
                    lambda r: f"{r[0][0]} has the most meetings: {number(r[0][1])}.", "busiest_room")  # fmt: skip
    if choice == 1:
        q = pick(
            rng,
            [
                "When does the first meeting on {d} start, and in which room?",
                "What's the earliest meeting on {d}?",
            ],
            d=_said_day(rng, day),
        )
        sql = ("SELECT m.title, m.start_time, r.name FROM meetings m JOIN rooms r USING (room_id) "
               f"WHERE CAST(m.start_time AS DATE) = '{day}' ORDER BY m.start_time LIMIT 1;")  # fmt: skip
        return Task("scheduling-assistant", q, [Step(f"I sort the meetings on {day} by start_time.", sql)], "The first row is the answer.",
                    lambda r: f"The first meeting on {day} is {r[0][0]} at {str(r[0][1])[11:16]} in {r[0][2]}.", "first_meeting")  # fmt: skip
    if choice == 2:
        room = _room(world, m[2])[1]
        q = pick(
            rng,
            ["What's the earliest time {r} is booked on {d}?", "When is {r} first booked on {d}?"],
            r=room,
            d=_said_day(rng, day),
        )
        sql = ("SELECT min(m.start_time) FROM meetings m JOIN rooms r USING (room_id) "
               f"WHERE r.name = '{room}' AND CAST(m.start_time AS DATE) = '{day}';")  # fmt: skip
        return Task("scheduling-assistant", q, [Step(f"I take the earliest start_time of {room}'s meetings on {day}.", sql)], "The result has it.",
                    lambda r: f"{room} is first booked at {str(r[0][0])[11:16]} on {day}.", "room_first")  # fmt: skip
    if choice == 3:
        org = _person_name(world, m[3])
        q = pick(
            rng,
            [
                "How many meetings is {p} organizing?",
                "how many meetings has {p} set up?",
                "Count of meetings organised by {p}?",
            ],
            p=org,
        )
        sql = f"SELECT count(*) FROM meetings m JOIN people p ON p.person_id = m.organizer_id WHERE p.name = '{org}';"
        return Task("scheduling-assistant", q, [Step(f"I count meetings whose organizer_id is {org}'s person_id.", sql)], "The count is in the result.",
                    lambda r: f"{org} organises {_plural(r[0][0], 'meeting')}.", "organised_count")  # fmt: skip
    q = rng.choice(["Who organises the most meetings?", "Which person has set up the most meetings?"])
    sql = ("SELECT p.name, count(*) AS n FROM meetings m JOIN people p ON p.person_id = m.organizer_id "
           "GROUP BY p.name ORDER BY n DESC, p.name LIMIT 1;")  # fmt: skip
    return Task("scheduling-assistant", q, [Step("I count meetings per organizer and take the most.", sql)], "The first row is the answer.",
                lambda r: f"{r[0][0]} organises the most meetings: {number(r[0][1])}.", "top_organizer")  # fmt: skip


def person_calendar(world: World, rng: random.Random) -> Task:
    """A person's team, or their meetings on a day."""
    p = some_person(world, rng)
    if rng.random() < 0.4:
        name = (
            p.first if [e[1] for e in world.employees].count(p.first) == 1 and rng.random() < 0.4 else p.full
        )
        q = pick(rng, ["What team is {n} on?", "Which team does {n} belong to?", "{n}'s team?"], n=name)
        column = "name LIKE '" + p.first + " %'" if name == p.first else f"name = '{p.full}'"
        sql = f"SELECT name, team FROM people WHERE {column};"
        return Task("scheduling-assistant", q, [Step("People's teams are in people.team.", sql)], "The result has the team.",
                    lambda r: f"{r[0][0]} is on the {r[0][1]} team.", "person_team")  # fmt: skip
    mine = [
        m for m in world.rows["meetings"] if (m[0], p.id) in set(map(tuple, world.rows["meeting_attendees"]))
    ]
    if not mine:
        raise AssistantDataError("no meetings")
    day = rng.choice(mine)[4].date()
    q = pick(rng, ["What meetings does {n} have on {d}?", "what's on {n}'s calendar on {d}?", "List {n}'s meetings for {d}."],
             n=p.full, d=_said_day(rng, day))  # fmt: skip
    sql = ("SELECT m.title, m.start_time, m.end_time FROM meetings m JOIN meeting_attendees a USING (meeting_id) "
           f"JOIN people p ON p.person_id = a.person_id WHERE p.name = '{p.full}' AND CAST(m.start_time AS DATE) = '{day}' ORDER BY m.start_time;")  # fmt: skip
    return Task("scheduling-assistant", q, [Step(f"I list the meetings {p.full} attends that start on {day}.", sql)], "I have the meetings.",
                lambda r: f"{p.full} has {_plural(len(r), 'meeting')} on {day}: " + join_words([f"{t} ({str(a)[11:16]}-{str(b)[11:16]})" for t, a, b in r]) + ".",
                "person_day")  # fmt: skip


def _time_said(rng: random.Random, hour: int, minute: int) -> str:
    if minute == 0 and rng.random() < 0.3:
        return f"{hour % 12 or 12}{'am' if hour < 12 else 'pm'}"
    return f"{hour:02d}:{minute:02d}" if rng.random() < 0.7 else f"{hour}:{minute:02d}"


def room_slot(world: World, rng: random.Random) -> tuple[tuple, str, str, str]:
    """(room, how the question says the slot, start, end) around one of the room's meetings."""
    m = rng.choice(world.rows["meetings"])
    room = _room(world, m[2])
    day = m[4].date()
    hour, minute = (
        (m[4].hour, m[4].minute) if rng.random() < 0.5 else (rng.randint(8, 16), rng.choice([0, 0, 30]))
    )
    length = rng.choice([30, 60, 60, 90])
    end_h, end_m = divmod(hour * 60 + minute + length, 60)
    start, end = f"{day} {hour:02d}:{minute:02d}", f"{day} {end_h:02d}:{end_m:02d}"
    a, b = _time_said(rng, hour, minute), _time_said(rng, end_h, end_m)
    said = rng.choice([f"on {_said_day(rng, day)} from {a} to {b}", f"on {day} {a}-{b}", f"on {_said_day(rng, day)} between {a} and {b}",
                       f"on {day} at {a} for {length} minutes" if length != 60 else f"on {day} at {a} for an hour"])  # fmt: skip
    return room, said, start, end


def _overlap(room: str, start: str, end: str) -> str:
    return ("SELECT m.title, m.start_time, m.end_time FROM meetings m JOIN rooms r USING (room_id) "
            f"WHERE r.name = '{room}' AND m.start_time < '{end}' AND m.end_time > '{start}';")  # fmt: skip


def _taken(world: World, room: tuple, start: str, end: str) -> bool:
    return any(
        m[2] == room[0] and str(m[4]) < f"{end}:00" and str(m[5]) > f"{start}:00"
        for m in world.rows["meetings"]
    )


def room_free(world: World, rng: random.Random) -> Task:
    """Is a named room free at a time? If so, a follow-up may book it."""
    room, said, start, end = room_slot(world, rng)
    name = room[1] if rng.random() < 0.7 else room[1].lower()
    q = pick(
        rng,
        [
            "Is {r} free {s}?",
            "Can I get the {r} room {s}?",
            "is {r} available {s}",
            "Is anything booked in {r} {s}?",
        ],
        r=name,
        s=said,
    )
    sql = _overlap(room[1], start, end)

    def answer(r: Rows) -> str:
        if not r:
            return f"Yes, {room[1]} is free from {start} to {end}: nothing is booked there then."
        return (
            f"No, {room[1]} is not free then: "
            + join_words([f"{t} ({str(a)[11:16]}-{str(b)[11:16]})" for t, a, b in r])
            + " is booked."
        )

    task = Task("scheduling-assistant", q, [Step(f"I look for meetings in {room[1]} that overlap {start} to {end}.", sql)], "The result answers it.",
                answer, "room_free", meta={"empty_ok": True})  # fmt: skip
    taken = any(
        m[2] == room[0] and str(m[4]) < f"{end}:00" and str(m[5]) > f"{start}:00"
        for m in world.rows["meetings"]
    )
    if not taken:
        task.follow_up = book_room(world, rng, (room, start, end), follow=True)
    return task


def book_room(world: World, rng: random.Random, slot: tuple | None = None, follow: bool = False) -> Task:
    """Book a named room: check it is free, then insert the meeting and its organizer (held for approval)."""
    if slot is None:
        want_free = rng.random() < 0.8  # mostly a room that is free, as people ask for rooms they saw free
        for _ in range(10):
            room, said, start, end = room_slot(world, rng)
            if _taken(world, room, start, end) != want_free:
                break
    else:
        room, said, start, end = slot[0], "", slot[1], slot[2]
    org = _person_name(world, rng.choice(world.employees)[0])
    title = rng.choice(
        [
            "Vendor call",
            "Roadmap review",
            "Coffee chat",
            "Hiring sync",
            "Budget check",
            "Onboarding",
            "Team retro",
            "Customer demo",
        ]
    )
    if follow:
        q = pick(
            rng,
            [
                "Great, book it then: '{t}', organised by {o}.",
                'ok please book it for {o}, title "{t}"',
                "Book it for {o}'s '{t}'.",
            ],
            t=title,
            o=org,
        )
    else:
        q = pick(rng, ["Book {r} for a '{t}' {s}, organised by {o}.", "Could you reserve {r} {s} for a meeting called '{t}'? {o} is the organizer.",
                       "please book the {rl} room {s} for {t}, {ol} is organising"], r=room[1], rl=room[1].lower(), t=title, s=said, o=org, ol=org.lower())  # fmt: skip
    sql = (f"SELECT r.room_id, (SELECT max(meeting_id) + 1 FROM meetings), (SELECT person_id FROM people WHERE name = '{org}') FROM rooms r "
           f"WHERE r.name = '{room[1]}' AND NOT EXISTS (SELECT 1 FROM meetings m WHERE m.room_id = r.room_id AND m.start_time < '{end}' AND m.end_time > '{start}');")  # fmt: skip
    thought = (f"The earlier answer said {room[1]} is free from {start} to {end}; " if follow else "") + \
        f"I check {room[1]} is free from {start} to {end} and get the next meeting_id and {org}'s person_id."  # fmt: skip
    return Task("scheduling-assistant", q, [Step(thought, sql)], "The booking waits for approval.", lambda r: "", "book_room",
                meta={"empty_ok": True, "room_booking": (title, room[1], start, end, org)})  # fmt: skip


def calendar_unknown(world: World, rng: random.Random) -> Task:
    """A room or a person the calendar does not have: look, find nothing, say so."""
    day = rng.choice(world.rows["meetings"])[4].date()
    known_rooms = {r[1] for r in world.rows["rooms"]}
    if rng.random() < 0.5:
        room = rng.choice(
            [
                r
                for r in ("Everest", "Summit", "Lotus", "Orion", "Atrium", "Beacon", "Canyon", "Meadow")
                if r not in known_rooms
            ]
        )
        q = pick(
            rng,
            [
                "Is the {r} room free on {d} at 10:00?",
                "How many seats does {r} have?",
                "book {r} on {d} at 3pm for an hour",
            ],
            r=room,
            d=day,
        )
        sql = f"SELECT room_id, name FROM rooms WHERE name = '{room}';"
        return Task("scheduling-assistant", q, [Step(f"I first check that a room called {room} exists.", sql)], "There is no such room.",
                    lambda r: f"There is no room called {room} in the calendar, so I can't answer that. The rooms are: {join_words(sorted(known_rooms))}.",
                    "unknown_room", meta={"empty_ok": True, "must_be_empty": True})  # fmt: skip
    known = {(e[1], e[2]) for e in world.employees}
    first, last = rng.choice([(f, x) for f in ("Oliver", "Greta", "Yuki", "Ahmed", "Clara", "Pedro", "Priya", "Lars") for x in ("Stone", "Lund", "Moreno", "Frost", "Patel")
                              if (f, x) not in known])  # fmt: skip
    q = pick(
        rng,
        ["Is {n} free on {d} at 11:00?", "What meetings does {n} have on {d}?", "Which team is {n} on?"],
        n=f"{first} {last}",
        d=day,
    )
    sql = f"SELECT person_id, name FROM people WHERE name = '{first} {last}';"
    return Task("scheduling-assistant", q, [Step(f"I first check that {first} {last} is in people.", sql)], "Nobody has that name.",
                lambda r: f"I couldn't find anyone called {first} {last} in the calendar, so I can't answer that.",
                "unknown_person", meta={"empty_ok": True, "must_be_empty": True})  # fmt: skip


def free_rooms_biggest(world: World, rng: random.Random, start: str, end: str, seats: int) -> Task:
    """A follow-up to a free-rooms answer: the biggest (or smallest) of them."""
    big = rng.random() < 0.6
    q = rng.choice(
        ["And which of those is the biggest?", "which one is largest?"]
        if big
        else ["Which of them is the smallest?", "and the smallest one?"]
    )
    sql = f"SELECT name, seats FROM free_rooms('{start}', '{end}', {seats}) ORDER BY seats {'DESC' if big else 'ASC'}, name LIMIT 1;"
    return Task("scheduling-assistant", q, [Step(f"The earlier answer listed the rooms free from {start} to {end}; I sort them by seats.", sql)],
                "The first row is the answer.", lambda r: f"{r[0][0]} is the {'biggest' if big else 'smallest'} of them, with {r[0][1]} seats.",
                "free_biggest")  # fmt: skip


HR_STATS_KINDS = [
    (count_by, 3),
    (request_stats, 2),
    (person_requests, 2),
    (leave_stats, 4),
    (hr_rooms, 1),
    (department_first_hire, 1),
]
SCHEDULING_STATS_KINDS = [
    (meeting_facts, 4),
    (calendar_stats, 3),
    (person_calendar, 2),
    (room_free, 3),
    (book_room, 3),
    (calendar_unknown, 2),
]

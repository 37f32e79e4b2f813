"""Training conversations for the HR and scheduling assistants, over generated companies.

Each example is a question a person would ask (in many phrasings: formal, casual, lower case, a
typo, a first name only, "I'm X, how many ... do I have"), the SQL steps that answer it, and an
answer worded from the rows the database returned. Every statement runs with the real SQL tool
against a generated world (``data/worlds.py``), so each observation is what the agent would see,
and every reply is checked to parse, with the agent's own parser, to the action it was written for.

The kinds: look-ups, counts, aggregates, joins (managers, locations), who/which/when questions,
date arithmetic (free rooms, free time, leave left), policies read from the policy table, bookings
and leave requests as writes that wait for approval, questions the data cannot answer (said so
plainly), and follow-ups that need the earlier turn (earlier turns are context, not trained on).

Each conversation opens as the server opens a run of its questions: with the worked example from
the profile's exemplar bank nearest them (agent/exemplars.py), or, with ``--one-shot fixed``, the
profile's own example, which the SFT recipe can then compute once for many conversations.
``--bank`` writes those banks instead: conversations over companies no training data is about,
decontaminated against the evaluation sets.

    python -m agentlm.data.assistant --out assistant.jsonl --worlds 8 --per-world 60 --seed 0
    python -m agentlm.data.assistant --bank --out agent/profiles --worlds 4 --per-world 150 --eval HELDOUT...
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from agentlm.agent.actions import FinalAnswer, ParsedReply, answer_reply, operation_reply, parse_db_reply
from agentlm.agent.profiles import Profile, history_messages, load_profile
from agentlm.agent.tools.sql import SQLTool
from agentlm.agent.trajectory import ToolCall
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
    vary,
)
from agentlm.data.assistant_stats import HR_STATS_KINDS, SCHEDULING_STATS_KINDS, free_rooms_biggest
from agentlm.data.decontaminate import EvalIndex, eval_task_texts
from agentlm.data.formats import Conversation, Turn, context_turns, write_jsonl
from agentlm.data.hr_tasks import join_words
from agentlm.data.worlds import World, build_world

# --- HR tasks ------------------------------------------------------------------------------------

LEAVE_WORDS = {"vacation": ["vacation days", "holiday days", "days of vacation", "PTO days"],
               "sick": ["sick days"], "personal": ["personal days"]}  # fmt: skip


def leave_left(world: World, rng: random.Random) -> Task:
    p = some_person(world, rng)
    name, where = how_named(world, rng, p)
    leave = rng.choice(["vacation", "vacation", "sick", "personal"])
    words = rng.choice(LEAVE_WORDS[leave])
    if rng.random() < 0.25:
        q = pick(rng, ["I'm {n}. How many {w} do I have left?", "This is {n} - how many {w} remain for me this year?",
                        "I am {n}, what's my remaining {w} balance?"], n=p.full, w=words)  # fmt: skip
    else:
        q = pick(rng, ["How many {w} does {n} have left?", "What's {n}'s remaining {w} balance for 2026?",
                        "how many {w} are left for {n}?", "Could you tell me how many {w} {n} still has?",
                        "{n}: {w} remaining?"], n=name, w=words)  # fmt: skip
    sql = (
        "SELECT b.entitled_days - b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
        f"WHERE {where} AND b.leave_type = '{leave}' AND b.year = 2026;"
    )
    thought = f"Remaining {leave} days are entitled_days - used_days in leave_balances for 2026; I find {p.full} through employees."
    return Task("hr-assistant", q, [Step(thought, sql)], f"The result is {p.full}'s remaining {leave} days.",
                lambda r: f"{p.full} has {number(r[0][0])} {leave} days left in 2026.", "leave_left")  # fmt: skip


def leave_used(world: World, rng: random.Random) -> Task:
    p = some_person(world, rng)
    name, where = how_named(world, rng, p)
    leave = rng.choice(["vacation", "sick", "sick", "personal"])
    words = rng.choice(LEAVE_WORDS[leave])
    q = pick(rng, ["How many {w} has {n} taken in 2026?", "How many {w} did {n} use this year?",
                    "what number of {w} has {n} used so far?", "{n} - {w} used in 2026?"], n=name, w=words)  # fmt: skip
    sql = (
        "SELECT b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
        f"WHERE {where} AND b.leave_type = '{leave}' AND b.year = 2026;"
    )
    return Task("hr-assistant", q, [Step(f"Used {leave} days are in leave_balances; I look up {p.full} through employees.", sql)],
                f"The query returned {p.full}'s used {leave} days.",
                lambda r: f"{p.full} has taken {number(r[0][0])} {leave} days in 2026.", "leave_used")  # fmt: skip


def manager_of(world: World, rng: random.Random) -> Task:
    emps = [e for e in world.employees if e[6] is not None]
    e0 = rng.choice(emps)
    p = Person(e0[0], e0[1], e0[2])
    name, where = how_named(world, rng, p)
    q = pick(rng, ["Who is {n}'s manager?", "Who does {n} report to?", "who manages {n}?",
                    "Can you tell me the name of {n}'s boss?", "Who's the line manager of {n}?"], n=name)  # fmt: skip
    sql = (
        "SELECT m.first_name, m.last_name FROM employees e JOIN employees m ON e.manager_id = m.employee_id "
        f"WHERE {where};"
    )
    task = Task("hr-assistant", q, [Step("An employee's manager is the employee whose employee_id is their manager_id, so I join employees with itself.", sql)],
                "The query returned the manager's name.", lambda r: f"{p.full}'s manager is {r[0][0]} {r[0][1]}.", "manager")  # fmt: skip
    m = world.employee(e0[6])
    task.follow_up = _about_named(world, rng, Person(m[0], m[1], m[2]), pronoun=True)
    return task


PERSON_FACTS = {
    "title": ("e.title", ["What is {n}'s job title?", "What does {n} do here?", "what's {n}'s role?"], "{n}'s title is {0}."),
    "email": ("e.email", ["What's {n}'s email address?", "How can I email {n}?", "email of {n}?"], "{n}'s email address is {0}."),
    "hired": ("e.hire_date", ["When did {n} join the company?", "What is {n}'s start date?", "When was {n} hired?"], "{n} joined on {0}."),
    "department": ("d.name", ["Which department is {n} in?", "What team does {n} work in?", "{n} works in which department?"], "{n} works in {0}."),
    "location": ("d.location", ["Where is {n} based?", "Which office does {n} work from?", "In which city does {n} work?"], "{n} is based in {0}."),
}  # fmt: skip
FOLLOW_UP_FACT = {
    "title": ["And what is their job title?", "What's that person's title?", "and their role?"],
    "email": ["What's their email?", "And how do I reach them by email?", "their email address please"],
    "hired": ["When did that person join?", "And when were they hired?", "how long have they been here - when did they start?"],
    "department": ["Which department is that person in?", "And what team are they on?"],
    "location": ["Where are they based?", "Which city is that person in?"],
}  # fmt: skip


def _about_named(world: World, rng: random.Random, p: Person, pronoun: bool = False) -> Task:
    fact = rng.choice(sorted(PERSON_FACTS))
    column, questions, answer = PERSON_FACTS[fact]
    name, where = (
        how_named(world, rng, p)
        if not pronoun
        else (p.full, f"e.first_name = '{p.first}' AND e.last_name = '{p.last}'")
    )
    q = rng.choice(FOLLOW_UP_FACT[fact]) if pronoun else rng.choice(questions).format(n=name)
    join = " JOIN departments d USING (department_id)" if column.startswith("d.") else ""
    sql = f"SELECT {column} FROM employees e{join} WHERE {where};"
    thought = (
        f"The earlier answer named {p.full}; " if pronoun else ""
    ) + f"I look up {p.full} in employees."
    return Task("hr-assistant", q, [Step(thought, sql)], "I have the answer.",
                lambda r: answer.format(r[0][0], n=p.full), f"person_{fact}")  # fmt: skip


def person_fact(world: World, rng: random.Random) -> Task:
    return _about_named(world, rng, some_person(world, rng))


def department_count(world: World, rng: random.Random) -> Task:
    d = rng.choice(world.rows["departments"])
    q = pick(rng, ["How many people work in {d}?", "What's the head count of the {d} team?", "how many employees does {d} have?",
                    "Size of the {d} department?"], d=d[1])  # fmt: skip
    sql = (
        f"SELECT count(*) FROM employees e JOIN departments d USING (department_id) WHERE d.name = '{d[1]}';"
    )
    task = Task("hr-assistant", q, [Step(f"I count the employees whose department is {d[1]}.", sql)], "The count is in the result.",
                lambda r: f"{number(r[0][0])} people work in {d[1]}.", "dept_count")  # fmt: skip
    if rng.random() < 0.5:
        members = _dept_members(world, rng, d, follow=True)
        task.follow_up = members
    return task


def _dept_members(world: World, rng: random.Random, d: tuple, follow: bool = False) -> Task:
    q = (rng.choice(["Who are they?", "And who works there?", "List them, please.", "Can you name them?"]) if follow
         else pick(rng, ["Who works in the {d} department?", "List everyone in {d}.", "who is on the {d} team?"], d=d[1]))  # fmt: skip
    sql = (
        "SELECT e.first_name, e.last_name FROM employees e JOIN departments d USING (department_id) "
        f"WHERE d.name = '{d[1]}' ORDER BY e.last_name, e.first_name;"
    )
    thought = (
        "The earlier question was about " if follow else "I need the members of "
    ) + f"the {d[1]} department; I list its employees."
    return Task("hr-assistant", q, [Step(thought, sql)], "I have the list of names.",
                lambda r: f"{len(r)} people work in {d[1]}: " + join_words([f'{a} {b}' for a, b in r]) + ".", "dept_members")  # fmt: skip


def department_members(world: World, rng: random.Random) -> Task:
    return _dept_members(world, rng, rng.choice(world.rows["departments"]))


def department_location(world: World, rng: random.Random) -> Task:
    d = rng.choice(world.rows["departments"])
    q = pick(
        rng,
        ["Where is the {d} department located?", "Which city is {d} in?", "where's the {d} team based?"],
        d=d[1],
    )
    sql = f"SELECT location FROM departments WHERE name = '{d[1]}';"
    return Task("hr-assistant", q, [Step("Departments have a location column.", sql)], "The location is in the result.",
                lambda r: f"The {d[1]} department is in {r[0][0]}.", "dept_location")  # fmt: skip


def extreme_hire(world: World, rng: random.Random) -> Task:
    newest = rng.random() < 0.6
    order = "DESC" if newest else "ASC"
    if rng.random() < 0.4:
        d = rng.choice(world.rows["departments"])
        q = pick(rng, ["Who joined {d} most recently?", "Who is the newest member of {d}?"] if newest
                  else ["Who has been in {d} the longest?", "Who is the longest-serving person in {d}?"], d=d[1])  # fmt: skip
        sql = ("SELECT e.first_name, e.last_name, e.hire_date FROM employees e JOIN departments d USING (department_id) "
               f"WHERE d.name = '{d[1]}' ORDER BY e.hire_date {order} LIMIT 1;")  # fmt: skip
        where = f" in {d[1]}"
    else:
        q = rng.choice(["Who joined the company most recently?", "Who is our newest employee?", "who was hired last?"] if newest
                       else ["Who has worked here the longest?", "Who is the longest-serving employee?", "who was hired first?"])  # fmt: skip
        sql = f"SELECT first_name, last_name, hire_date FROM employees ORDER BY hire_date {order} LIMIT 1;"
        where = ""
    word = "most recently" if newest else "earliest"
    return Task("hr-assistant", q, [Step(f"I sort employees{where} by hire_date and take the {'latest' if newest else 'earliest'}.", sql)],
                "The first row is the answer.", lambda r: f"{r[0][0]} {r[0][1]} joined {word}{where}, on {r[0][2]}.", "extreme_hire")  # fmt: skip


def pending_requests(world: World, rng: random.Random) -> Task:
    status = rng.choice(["pending", "pending", "approved", "rejected"])
    if rng.random() < 0.5:
        q = pick(
            rng,
            [
                "How many leave requests are {s}?",
                "How many {s} leave requests are there?",
                "count of {s} leave requests?",
            ],
            s=status,
        )
        sql = f"SELECT count(*) FROM leave_requests WHERE status = '{status}';"
        return Task("hr-assistant", q, [Step(f"I count the leave requests whose status is {status}.", sql)], "The count is in the result.",
                    lambda r: f"There are {number(r[0][0])} {status} leave requests.", "request_count")  # fmt: skip
    p = some_person(world, rng)
    name, where = how_named(world, rng, p)
    q = pick(
        rng,
        [
            "What leave requests has {n} made?",
            "Show me {n}'s leave requests.",
            "list {n}'s time-off requests",
        ],
        n=name,
    )
    sql = ("SELECT r.leave_type, r.start_date, r.end_date, r.status FROM leave_requests r JOIN employees e USING (employee_id) "
           f"WHERE {where} ORDER BY r.start_date;")  # fmt: skip

    def answer(r: Rows) -> str:
        if not r:
            return f"{p.full} has made no leave requests."
        items = [f"{t} from {a} to {b} ({s})" for t, a, b, s in r]
        return f"{p.full} has {len(r)} leave request{'s' if len(r) > 1 else ''}: " + join_words(items) + "."

    return Task("hr-assistant", q, [Step(f"Leave requests are in leave_requests; I find {p.full}'s through employees.", sql)],
                "I have the requests.", answer, "person_requests", meta={"empty_ok": True})  # fmt: skip


def aggregate(world: World, rng: random.Random) -> Task:
    choice = rng.randrange(4)
    if choice == 0:
        leave = rng.choice(["vacation", "sick"])
        q = f"Who has used the most {leave} days this year?"
        sql = ("SELECT e.first_name, e.last_name, b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
               f"WHERE b.leave_type = '{leave}' AND b.year = 2026 ORDER BY b.used_days DESC, e.last_name LIMIT 1;")  # fmt: skip
        return Task("hr-assistant", vary(rng, q), [Step(f"I sort the 2026 {leave} balances by used_days.", sql)], "The first row has the most.",
                    lambda r: f"{r[0][0]} {r[0][1]} has used the most {leave} days: {number(r[0][2])}.", "agg_max")  # fmt: skip
    if choice == 1:
        d = rng.choice(world.rows["departments"])
        q = pick(
            rng,
            [
                "What is the average number of vacation days used in {d}?",
                "On average, how many vacation days have people in {d} taken?",
            ],
            d=d[1],
        )
        sql = ("SELECT round(avg(b.used_days), 1) FROM leave_balances b JOIN employees e USING (employee_id) JOIN departments d USING (department_id) "
               f"WHERE d.name = '{d[1]}' AND b.leave_type = 'vacation' AND b.year = 2026;")  # fmt: skip
        return Task("hr-assistant", q, [Step(f"I average used vacation days over {d[1]}'s employees.", sql)], "The average is in the result.",
                    lambda r: f"People in {d[1]} have used {number(r[0][0])} vacation days on average in 2026.", "agg_avg")  # fmt: skip
    if choice == 2:
        q = rng.choice(
            [
                "Which department has the most employees?",
                "What's our biggest team?",
                "largest department by head count?",
            ]
        )
        sql = (
            "SELECT d.name, count(*) AS n FROM employees e JOIN departments d USING (department_id) "
            "GROUP BY d.name ORDER BY n DESC, d.name LIMIT 1;"
        )
        return Task("hr-assistant", q, [Step("I count employees per department and take the largest.", sql)], "The first row is the largest.",
                    lambda r: f"{r[0][0]} is the largest department, with {number(r[0][1])} employees.", "agg_group")  # fmt: skip
    q = rng.choice(
        [
            "How many employees are there in total?",
            "How many people work at the company?",
            "total head count?",
        ]
    )
    sql = "SELECT count(*) FROM employees;"
    return Task("hr-assistant", q, [Step("I count the rows of employees.", sql)], "The count is in the result.",
                lambda r: f"The company has {number(r[0][0])} employees.", "agg_count")  # fmt: skip


def direct_reports(world: World, rng: random.Random) -> Task:
    managers = sorted({e[6] for e in world.employees if e[6] is not None})
    m = world.employee(rng.choice(managers))
    p = Person(m[0], m[1], m[2])
    name, where = how_named(world, rng, p)
    q = pick(
        rng,
        ["Who reports to {n}?", "Who are {n}'s direct reports?", "How many people report to {n}?"],
        n=name,
    )
    sql = ("SELECT r.first_name, r.last_name FROM employees r JOIN employees e ON r.manager_id = e.employee_id "
           f"WHERE {where} ORDER BY r.last_name, r.first_name;")  # fmt: skip
    return Task("hr-assistant", q, [Step(f"Direct reports have manager_id equal to {p.full}'s employee_id.", sql)], "I have the list.",
                lambda r: f"{len(r)} people report to {p.full}: " + join_words([f'{a} {b}' for a, b in r]) + ".", "reports")  # fmt: skip


POLICY_QUESTIONS = {
    "vacation": ["How many vacation days do we get per year?", "Can unused vacation days be carried over?", "What's the vacation policy?"],
    "sick leave": ["When do I need a doctor's note?", "How many paid sick days do we have?", "what is the sick leave policy?"],
    "personal days": ["Do personal days carry over?", "What are personal days for?"],
    "leave requests": ["How far in advance must I request leave?", "Who approves leave requests?"],
    "remote work": ["Can I work from home?", "How many days a week can we work remotely?", "remote work policy?"],
    "meeting rooms": ["How do I book a meeting room?", "Do long room bookings need approval?"],
    "parental leave": ["How much parental leave do we get?", "what is the parental leave policy?"],
    "expenses": ["How are travel expenses reimbursed?", "What is the meal allowance?"],
    "training": ["Is there a training budget?", "How much can I spend on courses?"],
}  # fmt: skip


def policy(world: World, rng: random.Random) -> Task:
    topics = {t for _, t, _ in world.rows["policies"]}
    topic = rng.choice(sorted(POLICY_QUESTIONS))
    q = rng.choice(POLICY_QUESTIONS[topic])
    sql = f"SELECT text FROM policies WHERE topic = '{topic}';"
    if topic not in topics:
        return Task("hr-assistant", q, [Step(f"Policies are in the policies table; I look for the {topic} policy.", sql)],
                    "There is no such policy in the table.",
                    lambda r: f"I couldn't find a {topic} policy in the HR database, so I can't answer that; please ask the People team.",
                    "policy_missing", meta={"empty_ok": True})  # fmt: skip
    return Task("hr-assistant", q, [Step(f"Policies are in the policies table; I read the {topic} policy.", sql)],
                "The policy text answers the question.", lambda r: f"From the {topic} policy: {r[0][0]}", "policy")  # fmt: skip


UNANSWERABLE = [
    ("What is {n}'s salary?", "salaries"), ("How much does {n} earn?", "pay"),
    ("What's {n}'s home address?", "home addresses"), ("What is {n}'s phone number?", "phone numbers"),
    ("What was {n}'s last performance rating?", "performance ratings"), ("How old is {n}?", "birth dates or ages"),
    ("Is {n} married?", "family status"), ("What bonus did {n} get last year?", "bonuses"),
]  # fmt: skip


def unanswerable(world: World, rng: random.Random) -> Task:
    p = some_person(world, rng)
    if rng.random() < 0.35:  # someone who does not work here
        first, last = (
            rng.choice(["Oliver", "Greta", "Yuki", "Ahmed", "Clara", "Pedro"]),
            rng.choice(["Stone", "Lund", "Moreno", "Frost"]),
        )
        q = pick(rng, ["How many vacation days does {n} have left?", "Who is {n}'s manager?", "Which department is {n} in?"], n=f"{first} {last}")  # fmt: skip
        sql = f"SELECT employee_id, first_name, last_name FROM employees WHERE first_name = '{first}' AND last_name = '{last}';"
        return Task("hr-assistant", q, [Step(f"I first check that {first} {last} is in employees.", sql)], "Nobody has that name.",
                    lambda r: f"I couldn't find anyone called {first} {last} in the HR database, so I can't answer that.",
                    "unknown_person", meta={"empty_ok": True, "must_be_empty": True})  # fmt: skip
    template, what = rng.choice(UNANSWERABLE)
    q = template.format(n=p.full)
    thought = (f"The HR database has no {what}: its tables are departments, employees, leave balances and requests, "
               "rooms, meetings and policies.")  # fmt: skip
    return Task("hr-assistant", q, [], thought,
                lambda r: f"I can't answer that: the HR database has no {what}, so I don't know it. HR or {p.first}'s manager may be able to help.",
                "unanswerable")  # fmt: skip


def leave_request(world: World, rng: random.Random) -> Task:
    p = some_person(world, rng)
    leave = rng.choice(["vacation", "vacation", "personal"])
    day = rng.randrange(1, 27)
    month = rng.choice([12]) if rng.random() < 0.5 else rng.choice([11, 12])
    start = f"2026-{month:02d}-{day:02d}"
    days = rng.randint(1, 3) if leave == "vacation" else 1
    end = f"2026-{month:02d}-{day + days - 1:02d}"
    q = pick(rng, ["I'm {n}. Please file a {t} request for me from {a} to {b}.", "Request {t} leave for {n} from {a} to {b} ({d} days).",
                    "Can you put in a {t} leave request for {n}, {a} to {b}?"], n=p.full, t=leave, a=start, b=end, d=days)  # fmt: skip
    steps = [
        Step(
            f"A leave request needs {p.full}'s employee_id and the next request_id.",
            f"SELECT e.employee_id, (SELECT max(request_id) + 1 FROM leave_requests) FROM employees e WHERE e.first_name = '{p.first}' AND e.last_name = '{p.last}';",
        ),  # fmt: skip
    ]
    return Task("hr-assistant", q, steps, "The request waits for approval.", lambda r: "", "leave_request",
                meta={"write": lambda r: (f"INSERT INTO leave_requests VALUES ({r[0][1]}, {r[0][0]}, '{leave}', '{start}', '{end}', {days}, 'pending');",
                                          f"I filed a pending {leave} request for {p.full} from {start} to {end} ({days} day{'s' if days > 1 else ''}); it is held until you approve it, then the manager decides.")})  # fmt: skip


# --- scheduling tasks ----------------------------------------------------------------------------


def _ordinal(n: int) -> str:
    return f"{n}{'th' if n % 100 in (11, 12, 13) else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _clock(hour: int, minute: int) -> str:
    """12-hour time as people type it: 1pm, 1:30pm."""
    return f"{hour % 12 or 12}{f':{minute:02d}' if minute else ''}{'am' if hour < 12 else 'pm'}"


def _slot(world: World, rng: random.Random, meeting: tuple | None = None) -> tuple[str, str, str]:
    """(how the question says it, start, end) for an hour on a day that has meetings (or over `meeting`)."""
    m = meeting or rng.choice(world.rows["meetings"])
    day = m[4].date()
    hour = m[4].hour if meeting else rng.randint(8, 16)
    minutes = rng.choice([60, 60, 30, 90, 120])
    start = f"{day} {hour:02d}:00"
    end_h, end_m = divmod(hour * 60 + minutes, 60)
    end = f"{day} {end_h:02d}:{end_m:02d}"
    said = rng.choice([
        f"on {day} from {hour:02d}:00 to {end_h:02d}:{end_m:02d}",
        f"{day} {hour:02d}:00-{end_h:02d}:{end_m:02d}",
        f"on {day} between {hour:02d}:00 and {end_h:02d}:{end_m:02d}",
        f"on {day.strftime('%B')} {day.day}, {day.year} from {hour:02d}:00 to {end_h:02d}:{end_m:02d}",
        f"on {day.strftime('%B')} {_ordinal(day.day)} {day.year}, {_clock(hour, 0)} to {_clock(end_h, end_m)}",
    ])  # fmt: skip
    return said, start, end


def free_rooms(world: World, rng: random.Random) -> Task:
    said, start, end = _slot(world, rng)
    seats = rng.choice([1, 4, 6, 8, 10, 12])
    if seats == 1:
        q = pick(
            rng,
            ["Which rooms are free {s}?", "Is any meeting room available {s}?", "what rooms can I get {s}?"],
            s=said,
        )
    else:
        q = pick(rng, ["Which rooms with at least {n} seats are free {s}?", "I need a room for {n} people {s}. What's available?",
                        "find me a free room for {n} {s}"], s=said, n=seats)  # fmt: skip
    sql = f"SELECT * FROM free_rooms('{start}', '{end}', {seats});"

    def answer(r: Rows) -> str:
        if not r:
            return f"No room with at least {seats} seats is free from {start} to {end}."
        return (
            join_words([f"{n} ({s} seats)" for _, n, _, s in r])
            + f" {'is' if len(r) == 1 else 'are'} free from {start} to {end}."
        )

    task = Task("scheduling-assistant", q, [Step(f"free_rooms lists rooms without an overlapping meeting; I ask for {start} to {end} with {seats} seats or more.", sql)],
                "I have the free rooms.", answer, "free_rooms", meta={"empty_ok": True, "slot": (start, end, seats)})  # fmt: skip
    task.follow_up = free_rooms_biggest(world, rng, start, end, seats)
    return task


def busy(world: World, rng: random.Random) -> Task:
    p = some_person(world, rng)
    said, start, end = _slot(world, rng)
    mine = [m for m, person in world.rows["meeting_attendees"] if person == p.id]
    if mine and rng.random() < 0.5:  # as often a slot the person is in a meeting as a random one
        chosen = rng.choice(mine)
        m = next(x for x in world.rows["meetings"] if x[0] == chosen)
        said, start, end = _slot(world, rng, m)
    task = _busy(p, said, start, end, p.full if rng.random() < 0.75 else p.full.lower(), rng)
    other = rng.choice(world.rows["meetings"])[4].date()
    if str(other) != start[:10]:
        day_said = rng.choice([str(other), f"{other.strftime('%B')} {other.day}"])
        q = rng.choice([f"What about on {day_said} at the same time?", f"and on {day_said}, same hours?"])
        task.follow_up = _busy(p, q, f"{other} {start[11:]}", f"{other} {end[11:]}", None, rng)
    return task


def _busy(p: Person, said: str, start: str, end: str, name: str | None, rng: random.Random) -> Task:
    """Is `p` busy from `start` to `end`? `name` is how the question names them (None: a follow-up)."""
    if name is None:
        q, thought = (
            said,
            f"The earlier question was about {p.full}; busy lists their meetings that overlap {start} to {end}.",
        )
    else:
        q = pick(rng, ["Is {n} free {s}?", "Does {n} have any meetings {s}?", "can I grab {n} {s}?", "Is {n} busy {s}?",
                       "does {n} have anything {s}?"], n=name, s=said)  # fmt: skip
        thought = f"busy lists {p.full}'s meetings that overlap {start} to {end}."
    sql = f"SELECT * FROM busy('{p.full}', '{start}', '{end}');"

    def answer(r: Rows) -> str:
        if not r:
            return f"{p.full} is free from {start} to {end}: no meetings then."
        items = [f"{t} ({str(a)[11:16]}-{str(b)[11:16]})" for _, t, a, b in r]
        return f"{p.full} is busy then: " + join_words(items) + "."

    return Task(
        "scheduling-assistant",
        q,
        [Step(thought, sql)],
        "The result answers it.",
        answer,
        "busy",
        meta={"empty_ok": True},
    )


def day_meetings(world: World, rng: random.Random) -> Task:
    m = rng.choice(world.rows["meetings"])
    day = m[4].date()
    if rng.random() < 0.5:
        room = next(r for r in world.rows["rooms"] if r[0] == m[2])
        q = pick(
            rng, ["What's booked in {r} on {d}?", "Which meetings are in room {r} on {d}?"], r=room[1], d=day
        )
        sql = ("SELECT m.title, m.start_time, m.end_time FROM meetings m JOIN rooms r USING (room_id) "
               f"WHERE r.name = '{room[1]}' AND CAST(m.start_time AS DATE) = '{day}' ORDER BY m.start_time;")  # fmt: skip
        return Task("scheduling-assistant", q, [Step(f"I list meetings in {room[1]} that start on {day}.", sql)], "I have the bookings.",
                    lambda r: f"{room[1]} has {len(r)} meeting{'s' if len(r) != 1 else ''} on {day}: " + join_words([f"{t} ({str(a)[11:16]}-{str(b)[11:16]})" for t, a, b in r]) + ".",
                    "room_day")  # fmt: skip
    q = pick(rng, ["How many meetings are scheduled on {d}?", "How busy is {d} - how many meetings?"], d=day)
    sql = f"SELECT count(*) FROM meetings WHERE CAST(start_time AS DATE) = '{day}';"
    return Task("scheduling-assistant", q, [Step(f"I count meetings that start on {day}.", sql)], "The count is in the result.",
                lambda r: f"There are {number(r[0][0])} meetings on {day}.", "day_count")  # fmt: skip


def room_info(world: World, rng: random.Random) -> Task:
    room = rng.choice(world.rows["rooms"])
    if rng.random() < 0.5:
        q = pick(
            rng,
            [
                "How many seats does {r} have?",
                "What's the capacity of room {r}?",
                "how many people fit in {r}?",
            ],
            r=room[1],
        )
        sql = f"SELECT seats FROM rooms WHERE name = '{room[1]}';"
        return Task("scheduling-assistant", q, [Step("Room sizes are in rooms.seats.", sql)], "The result has the seats.",
                    lambda r: f"{room[1]} has {r[0][0]} seats.", "room_seats")  # fmt: skip
    q = rng.choice(
        ["Which is the biggest meeting room?", "What's our largest room?", "Which rooms are on floor {f}?"]
    ).format(f=room[2])
    if "floor" in q:
        sql = f"SELECT name, seats FROM rooms WHERE floor = {room[2]} ORDER BY name;"
        return Task("scheduling-assistant", q, [Step(f"I list rooms on floor {room[2]}.", sql)], "I have the rooms.",
                    lambda r: f"Floor {room[2]} has " + join_words([f"{n} ({s} seats)" for n, s in r]) + ".", "room_floor")  # fmt: skip
    sql = "SELECT name, seats FROM rooms ORDER BY seats DESC, name LIMIT 1;"
    return Task("scheduling-assistant", q, [Step("I sort rooms by seats.", sql)], "The first row is the largest.",
                lambda r: f"{r[0][0]} is the largest room, with {r[0][1]} seats.", "room_largest")  # fmt: skip


MEETING_TITLES = [
    "Design review",
    "Team lunch",
    "Interview",
    "Project kickoff",
    "Planning",
    "Demo",
    "Workshop",
    "Sync",
]


def booking(
    world: World, rng: random.Random, slot: tuple[str, str, int] | None = None, follow: bool = False
) -> Task:
    if slot is None:
        _, start, end = _slot(world, rng)
        seats = rng.choice([4, 6, 8])
    else:
        start, end, seats = slot
    organizer, other = rng.sample(world.employees, 2)
    title = rng.choice(MEETING_TITLES)
    org, oth = f"{organizer[1]} {organizer[2]}", f"{other[1]} {other[2]}"
    if follow:
        q = pick(rng, ["Book the smallest one for a \"{t}\" organised by {o} with {p}.", "ok, please book the first of them for {o} and {p} - title \"{t}\"."],
                  t=title, o=org, p=oth)  # fmt: skip
    else:
        q = pick(rng, ["Book a room for {n} for a \"{t}\" meeting organised by {o} with {p} from {a} to {b}.",
                        "Please schedule \"{t}\" for {o} and {p}, {a} to {b}, any room with {n}+ seats.",
                        "can you reserve a room ({n} seats) {a}-{b} for {o}'s \"{t}\"? {p} will join."],
                  n=seats, t=title, o=org, p=oth, a=start, b=end)  # fmt: skip
    return Task("scheduling-assistant", q,
                [Step(("The earlier answer listed the free rooms; I take the first that is still free, " if follow else "I take the first free room with enough seats, ") +
                      "with the next meeting_id and the people's ids.",
                      f"SELECT f.room_id, f.name, (SELECT max(meeting_id) + 1 FROM meetings), (SELECT person_id FROM people WHERE name = '{org}'), "
                      f"(SELECT person_id FROM people WHERE name = '{oth}') FROM free_rooms('{start}', '{end}', {seats}) f LIMIT 1;")],
                "The booking waits for approval.", lambda r: "", "booking", meta={"empty_ok": True, "booking": (title, start, end, org, oth, seats)})  # fmt: skip


def free_rooms_then_book(world: World, rng: random.Random) -> Task:
    task = free_rooms(world, rng)
    start, end, seats = task.meta["slot"]
    task.follow_up = booking(world, rng, (start, end, max(seats, 2)), follow=True)
    return task


CALENDAR_UNANSWERABLE = [
    ("What's the wifi password in {r}?", "wifi passwords"), ("Does {r} have a projector?", "room equipment"),
    ("How much does it cost to rent {r}?", "room prices"), ("Who cleaned {r} last?", "cleaning records"),
]  # fmt: skip


def calendar_unanswerable(world: World, rng: random.Random) -> Task:
    room = rng.choice(world.rows["rooms"])
    template, what = rng.choice(CALENDAR_UNANSWERABLE)
    thought = f"The calendar database has no {what}: it holds people, rooms (name, floor, seats), meetings and attendees."
    return Task("scheduling-assistant", template.format(r=room[1]), [], thought,
                lambda r: f"I can't answer that: the calendar has no {what}, so I don't know. Facilities may be able to help.",
                "unanswerable")  # fmt: skip


HR_KINDS = HR_STATS_KINDS + [(leave_left, 4), (leave_used, 2), (manager_of, 3), (person_fact, 3), (department_count, 2), (department_members, 1),
            (department_location, 1), (extreme_hire, 2), (pending_requests, 2), (aggregate, 2), (direct_reports, 1), (policy, 3),
            (unanswerable, 3), (leave_request, 2)]  # fmt: skip
SCHEDULING_KINDS = SCHEDULING_STATS_KINDS + [(free_rooms, 4), (busy, 3), (day_meetings, 2), (room_info, 2), (booking, 3), (free_rooms_then_book, 2),
                    (calendar_unanswerable, 1)]  # fmt: skip


# --- building conversations ----------------------------------------------------------------------

PROFILES = ("hr-assistant", "scheduling-assistant")


def _checked(reply: str, expected: ParsedReply) -> str:
    parsed = parse_db_reply(reply, repair=False)
    if parsed != expected:
        raise AssistantDataError(f"the reply parses to {parsed}, not {expected}:\n{reply}")
    return reply


def _run(task: Task, tool: SQLTool) -> tuple[list[Turn], str]:
    """The task's turns (question, steps, answer) and the answer, run against `tool`."""
    turns = [
        Turn(
            "user",
            vary(random.Random(task.question), task.question)
            if task.kind != "unanswerable"
            else task.question,
        )
    ]
    rows: Rows = []
    for step in task.steps:
        reply = _checked(
            operation_reply(step.thought, step.sql), ParsedReply(step.thought, ToolCall("sql", step.sql))
        )
        observation = tool.invoke(step.sql)
        if observation.startswith("Error:"):
            raise AssistantDataError(f"{task.kind}: {step.sql} failed: {observation}")
        rows = tool.run_rows(step.sql)
        if not rows and not task.meta.get("empty_ok"):
            raise AssistantDataError(f"{task.kind}: {step.sql} returned no rows")
        if rows and task.meta.get("must_be_empty"):
            raise AssistantDataError(f"{task.kind}: {step.sql} found a row it should not")
        turns += [Turn("assistant", reply, True), Turn("user", observation)]
    if "write" in task.meta:
        sql, answer = task.meta["write"](rows)
        thought = "I have the ids, so I insert the request; it waits for approval."
        turns += _write_turns(tool, [(thought, sql)])
        final = answer
    elif "booking" in task.meta:
        final, more = _booking_turns(task, rows, tool)
        turns += more
    elif "room_booking" in task.meta:
        final, more = _room_booking_turns(task, rows, tool)
        turns += more
    else:
        final = task.answer(rows)
    thought = task.final_thought or "Done."
    turns.append(
        Turn(
            "assistant",
            _checked(answer_reply("db", final, thought), ParsedReply(thought, FinalAnswer(final))),
            True,
        )
    )
    return turns, final


def _write_turns(tool: SQLTool, writes: list[tuple[str, str]]) -> list[Turn]:
    turns = []
    for thought, sql in writes:
        reply = _checked(operation_reply(thought, sql), ParsedReply(thought, ToolCall("sql", sql)))
        observation = tool.invoke(sql)
        if observation.startswith("Error:"):
            raise AssistantDataError(f"{sql} failed: {observation}")
        turns += [Turn("assistant", reply, True), Turn("user", observation)]
    return turns


def _booking_turns(task: Task, rows: Rows, tool: SQLTool) -> tuple[str, list[Turn]]:
    title, start, end, org, oth, seats = task.meta["booking"]
    if not rows:
        return f"No room with at least {seats} seats is free from {start} to {end}, so I booked nothing.", []
    room_id, room, meeting_id, org_id, oth_id = rows[0]
    writes = [
        (f"Room {room_id} is free, so I book it as meeting {meeting_id}.",
         f"INSERT INTO meetings VALUES ({meeting_id}, '{title}', {room_id}, {org_id}, '{start}', '{end}');"),
        ("Now the organizer and the attendee.",
         f"INSERT INTO meeting_attendees VALUES ({meeting_id}, {org_id}), ({meeting_id}, {oth_id});"),
    ]  # fmt: skip
    answer = (f"I booked {room} for \"{title}\" from {start} to {end} with {org} and {oth}. "
              "The booking is held until you approve it.")  # fmt: skip
    return answer, _write_turns(tool, writes)


def _room_booking_turns(task: Task, rows: Rows, tool: SQLTool) -> tuple[str, list[Turn]]:
    title, room, start, end, org = task.meta["room_booking"]
    if not rows:
        return f"{room} is not free from {start} to {end}, so I booked nothing.", []
    room_id, meeting_id, org_id = rows[0]
    writes = [
        (f"{room} is free, so I book it as meeting {meeting_id}.",
         f"INSERT INTO meetings VALUES ({meeting_id}, '{title}', {room_id}, {org_id}, '{start}', '{end}');"),
        ("Now the organizer as an attendee.", f"INSERT INTO meeting_attendees VALUES ({meeting_id}, {org_id});"),
    ]  # fmt: skip
    answer = f'I booked {room} for "{title}" from {start} to {end}, organised by {org}. The booking is held until you approve it.'
    return answer, _write_turns(tool, writes)


def _prompt(profile: Profile, questions: list[str], rng: random.Random) -> list[Turn]:
    """The opening a run of `questions` gets: with an exemplar bank, one of the nearest examples
    (usually the nearest, as served; sometimes the second or third, so the model also learns to
    answer when the example shown is only close)."""
    rank = rng.choices((0, 1, 2), weights=(6, 2, 2))[0]
    return context_turns(profile.opening_messages(questions, rank))


def build_examples(
    world: World, n: int, rng: random.Random, profiles: dict[str, Profile]
) -> list[Conversation]:
    """`n` conversations over `world`, in the proportions of HR_KINDS and SCHEDULING_KINDS."""
    kinds = [(f, w, "hr-assistant") for f, w in HR_KINDS] + [
        (f, w, "scheduling-assistant") for f, w in SCHEDULING_KINDS if w
    ]
    out: list[Conversation] = []
    attempts = 0
    while len(out) < n and attempts < n * 5:
        attempts += 1
        fn, _, profile_id = rng.choices(kinds, weights=[w for _, w, _ in kinds])[0]
        try:
            task = fn(world, rng)
        except AssistantDataError:
            continue  # the draw has nothing to ask in this world (e.g. no meeting named uniquely)
        profile = profiles[task.profile].with_database(
            world.hr_db if task.profile == "hr-assistant" else world.scheduling_db
        )
        tool = SQLTool(database=profile.database_path(), writes="scratch", render="repr")
        try:
            turns, answer = _run(task, tool)
            questions, body, kind = [turns[0].content], turns, task.kind
            follow = task.follow_up
            if follow is not None and rng.random() < 0.7:
                # The follow-up sees the earlier turn as the server renders it (history_messages): the
                # question and the answer the person saw, not trained on; then its own steps, trained on.
                follow_turns, _ = _run(follow, tool)
                earlier = [
                    {"role": "user", "content": turns[0].content},
                    {"role": "assistant", "content": answer},
                ]
                questions = [turns[0].content, follow_turns[0].content]
                body = context_turns(history_messages("db", earlier)) + follow_turns
                kind = f"{task.kind}+{follow.kind}"
        except AssistantDataError:
            continue  # a draw that does not fit this world (no rows, a missing room): draw again
        finally:
            tool.close()
        out.append(Conversation(f"assistant-w{world.seed}-{len(out):04d}", _prompt(profile, questions, rng) + body,
                                source=f"assistant/{kind}", extra={"profile": task.profile}))  # fmt: skip
    return out


def generate(
    worlds: int,
    per_world: int,
    seed: int,
    folder: Path,
    one_shot: str = "nearest",
) -> list[Conversation]:
    """Conversations over `worlds` generated companies. `one_shot`: "nearest" shows each the
    worked example the server would (its profile's exemplar bank), "fixed" the profile's one
    `one_shot`, which every conversation of a profile then shares (train/prefix.py computes that
    opening once per micro batch: about 2.5x the conversations per hour on the CPU)."""
    if one_shot not in ("nearest", "fixed"):
        raise ValueError(f"one_shot must be 'nearest' or 'fixed', not {one_shot!r}")
    profiles = {p: load_profile(p) for p in PROFILES}
    if one_shot == "fixed":
        profiles = {p: profile.model_copy(update={"exemplars": None}) for p, profile in profiles.items()}
    rng = random.Random(seed)
    out = []
    for w in range(worlds):
        world = build_world(1000 + seed * 100 + w, folder)
        out += build_examples(world, per_world, rng, profiles)
    return out


# Banks come from companies no training conversation is about (training uses world seeds 1000 +
# 100 * seed + w), so a conversation's example never shows its own company's answers.
BANK_SEED = 50
BANK_MAX_CHARS = 1400  # longer examples (many rows) cost more prompt than they teach
# Kinds whose answer turns on what one company's data lacks (a person or room it does not have, a
# policy it never wrote): worded like the common questions, they would be shown for those and
# teach "there is no such person". Training conversations still have them.
BANK_SKIP = {"unknown_person", "unknown_room", "policy_missing"}


def generate_bank(
    worlds: int, per_world: int, folder: Path, evals: EvalIndex | None = None
) -> dict[str, list[dict]]:
    """Exemplar-bank records (agent/exemplars.py) per profile, from generated companies.

    Each is a conversation's own turns without its opening; its query is its user questions (the
    earlier one of a follow-up first). Identical questions are kept once; an example any of whose
    questions overlaps an evaluation task (`evals`) is left out, as training data is: every
    training conversation and every served run shows one.
    """
    opening = {p: len(load_profile(p).opening_messages()) for p in PROFILES}  # with the fixed example
    banks: dict[str, list[dict]] = {p: [] for p in PROFILES}
    seen: set[str] = set()
    for c in generate(worlds, per_world, BANK_SEED, folder, one_shot="fixed"):
        profile, kind = c.extra["profile"], c.source.removeprefix("assistant/")
        if BANK_SKIP & set(kind.split("+")):
            continue
        body = c.turns[opening[profile] :]
        questions = [body[0].content] + ([body[2].content] if "+" in kind else [])
        query = " ".join(questions)
        if query in seen or sum(len(t.content) for t in body) > BANK_MAX_CHARS:
            continue
        if evals is not None and any(evals.hit(q) for q in questions):
            continue
        seen.add(query)
        messages = [{"role": t.role, "content": t.content} for t in body]
        banks[profile].append({"kind": kind, "query": query, "messages": messages})
    return banks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agentlm data assistant", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, type=Path, help="conversations (JSONL); with --bank, a folder"
    )
    parser.add_argument(
        "--worlds", type=int, default=8, help="generated companies (none is the shipped sample)"
    )
    parser.add_argument("--per-world", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--one-shot",
        choices=("nearest", "fixed"),
        default="nearest",
        help="the worked example each conversation shows: the nearest in the profile's bank (as served), "
        "or the profile's fixed one (shared by all, so training shares its computation)",
    )
    parser.add_argument(
        "--bank",
        action="store_true",
        help="write each profile's exemplar bank (<profile>.exemplars.jsonl) into --out instead",
    )
    parser.add_argument(
        "--eval", nargs="*", default=[], help="with --bank: evaluation task files no example may overlap"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.bank:
            args.out.mkdir(parents=True, exist_ok=True)
            evals = EvalIndex([t for path in args.eval for t in eval_task_texts(path)])
            for profile, records in generate_bank(args.worlds, args.per_world, Path(tmp), evals).items():
                path = args.out / f"{profile}.exemplars.jsonl"
                path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                print(f"wrote {len(records)} worked examples to {path}")
            return
        conversations = generate(args.worlds, args.per_world, args.seed, Path(tmp), one_shot=args.one_shot)
    n = write_jsonl(args.out, conversations)
    print(f"wrote {n} assistant conversations to {args.out}")


if __name__ == "__main__":
    main()

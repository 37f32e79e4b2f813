"""Assistant tasks over the HR database: look-ups, joins, lists, policies, refusals and leave requests.

A person's remaining or used leave, their manager, title, e-mail, start date, department or city;
a department's head count, members and location; who joined first or last; leave requests by
status or person; simple aggregates; direct reports; policies read from the policy table (said
plainly when the company never wrote one); questions the database cannot answer (salaries, people
who do not work here); and leave requests filed as writes that wait for approval. Some carry a
follow-up that needs the earlier turn.

Each kind returns a ``Task`` (``data/asktask.py``); ``HR_KINDS`` weighs them with the counting
and ranking kinds of ``data/assistant_stats.py``, and ``data/assistant.py`` runs them against a world.
"""

from __future__ import annotations

import random

from agentlm.data.asktask import Person, Rows, Step, Task, how_named, number, pick, some_person, vary
from agentlm.data.assistant_stats import HR_STATS_KINDS
from agentlm.data.hr_tasks import join_words
from agentlm.data.worlds import World

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


HR_KINDS = HR_STATS_KINDS + [(leave_left, 4), (leave_used, 2), (manager_of, 3), (person_fact, 3), (department_count, 2), (department_members, 1),
            (department_location, 1), (extreme_hire, 2), (pending_requests, 2), (aggregate, 2), (direct_reports, 1), (policy, 3),
            (unanswerable, 3), (leave_request, 2)]  # fmt: skip

"""Tool-calling training conversations in the embedded model's format (``agent/toolcalls.py``).

A model that is to call *any* caller's functions must read the schema it is given, not remember
one. So every example draws its functions from a pool of concepts (an employee look-up, a leave
balance, free rooms, the weather, a currency conversion, ...) and writes each with a name,
parameter names and a description drawn at random (``get_employee(name)``,
``employee_info(full_name)``, ``lookup_person(employee)``), among distractors. The request is
worded in many ways (formal, casual, lower case, "I'm X", times as "2pm") and the reply copies its
values into the declared parameters in the declared formats.

Kinds of example: one call; an optional parameter given or left out; two calls at once; a call whose
result decides the next (a manager's record, the first member of a team, a leave request only if
enough days are left, a room from the free ones); no call (general questions, greetings, requests
no offered function fits, an answer from results already there); and follow-up requests later in
the conversation. Results come back as JSON and the last reply answers in words from them.

    python -m agentlm.data.toolcalls --out toolcalls.jsonl --examples 300 --seed 0
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlm.agent.toolcalls import format_tool_calls, format_tool_responses, system_with_tools
from agentlm.data.assistant_scheduling import _clock
from agentlm.data.formats import Conversation, Turn, write_jsonl
from agentlm.data.tool_pool import LEAVE_TYPES, POOL, Function, realise
from agentlm.data.worlds import DEPARTMENTS, FIRST, LAST, ROOMS
from agentlm.options import invoke, options_from, settings_of

CITIES = ("Munich", "Paris", "Vienna", "Dublin", "Amsterdam", "Madrid", "Prague", "Oslo", "Lima",
          "Nairobi", "Tokyo", "Toronto", "Seoul", "Cairo", "Quito", "Perth")  # fmt: skip
TEAMS = tuple(d for d, _ in DEPARTMENTS)
CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF", "SEK", "CAD")
TOPICS = ("vacation", "sick leave", "parental leave", "expenses", "training", "meeting rooms",
          "remote work", "overtime", "travel")  # fmt: skip


# --- values and their wordings -------------------------------------------------------------------


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _said(rng: random.Random, name: str) -> str:
    """A name as a person might type it."""
    return name.lower() if rng.random() < 0.2 else name


def _day(rng: random.Random) -> str:
    return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _day_said(rng: random.Random, day: str) -> str:
    if rng.random() < 0.75:
        return day
    d = date.fromisoformat(day)
    return f"{d:%B} {d.day}, {d.year}" if rng.random() < 0.5 else f"{d.day} {d:%B} {d.year}"


def _hour_said(rng: random.Random, h: int) -> str:
    return f"{h:02d}:00" if rng.random() < 0.7 else _clock(h, 0)


@dataclass
class Example:
    """One exchange: the request, rounds of calls with their results, the answer, and the functions it calls."""

    request: str
    rounds: list[list[dict[str, Any]]] = field(default_factory=list)  # calls per round
    results: list[list[Any]] = field(default_factory=list)  # one result per call
    answer: str = ""
    needs: list[Function] = field(default_factory=list)


def _record(name: str, rng: random.Random) -> dict[str, Any]:
    first, last = name.split()
    team, city = rng.choice(DEPARTMENTS)
    return {"name": name, "title": rng.choice(["Analyst", "Engineer", "Designer", "Recruiter", "Buyer"]),
            "department": team, "manager": _name(rng), "email": f"{first}.{last}@example.com".lower(),
            "location": city, "hire_date": _day(rng)}  # fmt: skip


def _single(rng: random.Random) -> Example:
    kind = rng.choice(["employee", "balance", "members", "free_rooms", "book", "request_leave", "policy",
                       "weather", "convert", "message", "calendar", "manager", "clock", "task"])  # fmt: skip
    fn = realise(kind, rng)
    n = _name(rng)
    if kind == "employee":
        rec = _record(n, rng)
        ask = rng.choice(["Who is {n}?", "can u pull {n}'s file", "What's {n}'s email?",
                          "When did {n} join?", "Which department is {n} in?", "Look up {n}."])  # fmt: skip
        return Example(ask.format(n=_said(rng, n)), [[fn.call(person=n)]], [[rec]],
                       f"{n} is a {rec['title']} in {rec['department']} ({rec['email']}), hired {rec['hire_date']}.", [fn])  # fmt: skip
    if kind == "balance":
        lt, days = rng.choice(LEAVE_TYPES), rng.randint(0, 25)
        year = 2026 if rng.random() < 0.3 else None
        ask = rng.choice(["How many {t} days are left for {n}?", "{n} - remaining {t} days?",
                          "check {n}'s {t} balance", "does {n} still have {t} days?", "I'm {n}. How many {t} days do I have?"])  # fmt: skip
        ask = ask.format(n=_said(rng, n), t=lt) + (" (leave year 2026)" if year else "")
        return Example(ask, [[fn.call(person=n, leave_type=lt, year=year)]], [[{"name": n, "leave_type": lt, "days_left": days}]],
                       f"{n} has {days} {lt} days left.", [fn])  # fmt: skip
    if kind == "members":
        team = rng.choice(TEAMS)
        people = [_name(rng) for _ in range(rng.randint(2, 4))]
        ask = rng.choice(
            ["Who works in {d}?", "list everyone on the {d} team", "Who's in {d}?", "Members of {d}, please."]
        )
        said = team.lower() if rng.random() < 0.3 else team
        return Example(
            ask.format(d=said), [[fn.call(team=team)]], [[people]], f"{team}: {', '.join(people)}.", [fn]
        )
    if kind == "free_rooms":
        day, h = _day(rng), rng.randint(8, 16)
        seats = rng.choice([None, 4, 6, 8, 10, 12])
        span = f"{_day_said(rng, day)} from {_hour_said(rng, h)} to {_hour_said(rng, h + 1)}"
        ask = (rng.choice(["What rooms are open {s}?", "any free room {s}?"]) if seats is None
               else rng.choice(["Looking for a room that seats {k}, {s}.", "rooms with {k}+ seats free {s}?"]))  # fmt: skip
        rooms = [{"name": r, "seats": rng.choice([4, 6, 8, 12, 16])} for r in rng.sample(ROOMS, 2)]
        return Example(ask.format(s=span, k=seats), [[fn.call(start=f"{day} {h:02d}:00", end=f"{day} {h + 1:02d}:00", seats=seats)]],
                       [[rooms]], f"{rooms[0]['name']} and {rooms[1]['name']} are free then.", [fn])  # fmt: skip
    if kind == "book":
        day, h = _day(rng), rng.randint(8, 16)
        room, title = (
            rng.choice(ROOMS),
            rng.choice(["Planning", "Retro", "Demo", "Interview", "Team lunch", "1:1"]),
        )
        ask = rng.choice(["Book {r} for '{t}' on {d} from {a} to {b}.", "Please reserve {r} on {d}, {a}-{b}, titled \"{t}\".",
                          "can you book {r} {d} {a} to {b} for {t}"])  # fmt: skip
        ask = ask.format(
            r=room, t=title, d=_day_said(rng, day), a=_hour_said(rng, h), b=_hour_said(rng, h + 1)
        )
        return Example(ask, [[fn.call(room=room, start=f"{day} {h:02d}:00", end=f"{day} {h + 1:02d}:00", title=title)]],
                       [[{"booking_id": rng.randint(10, 999), "status": "pending approval"}]],
                       f"I booked {room} for \"{title}\" on {day} from {h:02d}:00; it waits for approval.", [fn])  # fmt: skip
    if kind == "request_leave":
        lt = rng.choice(LEAVE_TYPES)
        s, e = sorted([_day(rng), _day(rng)])
        if rng.random() < 0.3:
            e = s
        ask = rng.choice(["File {t} leave for {n} from {s} to {e}.", "I'm {n}. Please request {t} leave for me from {s} to {e}.",
                          "{n} is off ({t}) {s} until {e}, log it please"])  # fmt: skip
        if s == e:
            ask = rng.choice(
                ["{n} is off {t} on {s}, just that day. Please log it.", "Put in a {t} day for {n} on {s}."]
            )
        ask = ask.format(n=_said(rng, n), t=lt, s=_day_said(rng, s), e=_day_said(rng, e))
        return Example(ask, [[fn.call(person=n, leave_type=lt, start_date=s, end_date=e)]], [[{"request_id": rng.randint(100, 999), "status": "pending"}]],
                       f"I filed {lt} leave for {n} from {s} to {e}; it waits for the manager's approval.", [fn])  # fmt: skip
    if kind == "policy":
        topic = rng.choice(TOPICS)
        ask = rng.choice(
            ["What do the rules say about {t}?", "What does the {t} policy say?", "rules for {t}?"]
        ).format(t=topic)
        text = f"The {topic} policy: ask your manager first; details are on the intranet."
        return Example(ask, [[fn.call(topic=topic)]], [[{"topic": topic, "text": text}]], text, [fn])
    if kind == "weather":
        city, unit = rng.choice(CITIES), rng.choice([None, None, "celsius", "fahrenheit"])
        ask = rng.choice(
            ["What's the weather in {c}?", "weather {c}?", "Is it cold in {c} right now?"]
        ).format(c=city)
        ask += f" In {unit}, please." if unit else ""
        t = rng.randint(-5, 35)
        return Example(ask, [[fn.call(city=city, unit=unit)]], [[{"city": city, "temperature": t, "conditions": "clear"}]],
                       f"It is {t} degrees and clear in {city}.", [fn])  # fmt: skip
    if kind == "convert":
        amount = rng.choice([10, 25, 99.5, 120, 1500, 42])
        a, b = rng.sample(CURRENCIES, 2)
        out = round(amount * rng.uniform(0.5, 1.5), 2)
        ask = rng.choice(["Convert {x} {a} to {b}.", "how much is {x} {a} in {b}?"]).format(
            x=amount, a=a, b=b
        )
        return Example(ask, [[fn.call(amount=amount, **{"from": a, "to": b})]], [[{"result": out, "currency": b}]],
                       f"{amount} {a} is {out} {b}.", [fn])  # fmt: skip
    if kind == "message":
        text = rng.choice(["The report is ready.", "I'm running ten minutes late.", "Lunch at noon?"])
        ask = rng.choice(["Tell {n}: {x}", 'Send {n} a message saying "{x}"']).format(n=n, x=text)
        return Example(
            ask, [[fn.call(to=n, text=text)]], [[{"sent": True}]], f"I sent {n} your message.", [fn]
        )
    if kind == "calendar":
        day = _day(rng)
        ask = rng.choice(["What's on {n}'s calendar on {d}?", "Is {n} busy on {d}?"]).format(
            n=_said(rng, n), d=_day_said(rng, day)
        )
        return Example(ask, [[fn.call(person=n, date=day)]], [[[{"title": "Sync", "start": "10:00", "end": "10:30"}]]],
                       f"{n} has one event on {day}: Sync from 10:00 to 10:30.", [fn])  # fmt: skip
    if kind == "manager":
        m = _name(rng)
        ask = rng.choice(["Who is {n}'s manager?", "who does {n} report to"]).format(n=_said(rng, n))
        return Example(
            ask, [[fn.call(person=n)]], [[{"employee": n, "manager": m}]], f"{n}'s manager is {m}.", [fn]
        )
    if kind == "clock":
        city = rng.choice(CITIES)
        ask = rng.choice(["What time is it in {c}?", "current time in {c}?"]).format(c=city)
        return Example(
            ask, [[fn.call(city=city)]], [[{"city": city, "time": "14:05"}]], f"It is 14:05 in {city}.", [fn]
        )
    title, due = rng.choice(["Renew passport", "Send invoices", "Call the landlord"]), _day(rng)
    ask = rng.choice(["Remind me to {t} by {d}.", "add a todo: {t}, due {d}"]).format(
        t=title.lower(), d=_day_said(rng, due)
    )
    return Example(
        ask,
        [[fn.call(title=title.lower(), due=due)]],
        [[{"created": True}]],
        f'Added "{title.lower()}", due {due}.',
        [fn],
    )


def _parallel(rng: random.Random) -> Example:
    kind = rng.randrange(6)
    if kind == 0:  # two people, one leave type
        fn, lt = realise("balance", rng), rng.choice(LEAVE_TYPES)
        a, b = _name(rng), _name(rng)
        d = [rng.randint(0, 25), rng.randint(0, 25)]
        ask = rng.choice(["{t} balance of {a} and of {b}?", "Compare the {t} days left for {a} and {b}."])
        return Example(ask.format(t=lt, a=a, b=b), [[fn.call(person=a, leave_type=lt), fn.call(person=b, leave_type=lt)]],
                       [[{"name": a, "days_left": d[0]}, {"name": b, "days_left": d[1]}]],
                       f"{a} has {d[0]} {lt} days left and {b} has {d[1]}.", [fn])  # fmt: skip
    if kind == 1:  # one person, two leave types
        fn, n = realise("balance", rng), _name(rng)
        s, t = rng.sample(LEAVE_TYPES, 2)
        d = [rng.randint(0, 25), rng.randint(0, 25)]
        ask = rng.choice(["{n}: {s} days left, and {t} days left?", "{n}'s {s} and {t} balances?"])
        return Example(ask.format(n=n, s=s, t=t), [[fn.call(person=n, leave_type=s), fn.call(person=n, leave_type=t)]],
                       [[{"leave_type": s, "days_left": d[0]}, {"leave_type": t, "days_left": d[1]}]],
                       f"{n} has {d[0]} {s} days and {d[1]} {t} days left.", [fn])  # fmt: skip
    if kind == 2:  # two people looked up
        fn, a, b = realise("employee", rng), _name(rng), _name(rng)
        recs = [_record(a, rng), _record(b, rng)]
        ask = rng.choice(["Get me the records of {a} and {b}.", "I need {a} and {b}."])
        return Example(ask.format(a=a, b=b), [[fn.call(person=a), fn.call(person=b)]], [recs],
                       f"{a} works in {recs[0]['department']}; {b} works in {recs[1]['department']}.", [fn])  # fmt: skip
    if kind == 3:  # two teams
        fn, (a, b) = realise("members", rng), rng.sample(TEAMS, 2)
        people = [[_name(rng), _name(rng)], [_name(rng)]]
        return Example(rng.choice(["{a} and {b}: who is in each?", "List {a} and {b}."]).format(a=a, b=b),
                       [[fn.call(team=a), fn.call(team=b)]], [people],
                       f"{a}: {', '.join(people[0])}. {b}: {people[1][0]}.", [fn])  # fmt: skip
    if kind == 4:  # two cities
        fn, (a, b) = realise(rng.choice(["weather", "clock"]), rng), rng.sample(CITIES, 2)
        t = [rng.randint(-5, 30), rng.randint(-5, 30)]
        if fn.concept == "weather":
            ask = rng.choice(["How is the weather in {a} versus {b}?", "weather in {a} and {b}?"])
            said = f"It is {t[0]} degrees in {a} and {t[1]} in {b}."
            results = [{"city": a, "temperature": t[0]}, {"city": b, "temperature": t[1]}]
        else:
            ask = rng.choice(["What time is it in {a} and in {b}?", "local time in {a} and {b}?"])
            said = f"It is {t[0] % 24:02d}:00 in {a} and {t[1] % 24:02d}:00 in {b}."
            results = [{"city": a, "time": f"{t[0] % 24:02d}:00"}, {"city": b, "time": f"{t[1] % 24:02d}:00"}]
        return Example(ask.format(a=a, b=b), [[fn.call(city=a), fn.call(city=b)]], [results], said, [fn])
    fn = realise("free_rooms", rng)  # two slots
    d1, d2, h = _day(rng), _day(rng), rng.randint(8, 16)
    ask = f"Rooms free {h:02d}:00-{h + 1:02d}:00 on {d1}, and on {d2} at that time too?"
    calls = [fn.call(start=f"{d} {h:02d}:00", end=f"{d} {h + 1:02d}:00") for d in (d1, d2)]
    rooms = [[{"name": rng.choice(ROOMS), "seats": 8}] for _ in (d1, d2)]
    return Example(
        ask, [calls], [rooms], f"{rooms[0][0]['name']} on {d1}, {rooms[1][0]['name']} on {d2}.", [fn]
    )


def _chained(rng: random.Random) -> Example:
    kind = rng.randrange(6)
    n = _name(rng)
    if kind == 0:  # a person's manager, then the manager's record
        fn = realise("employee", rng)
        rec = _record(n, rng)
        boss = _record(rec["manager"], rng)
        ask = rng.choice(["I need the e-mail of {n}'s manager.", "Find {n}'s boss and their department."])
        return Example(ask.format(n=n), [[fn.call(person=n)], [fn.call(person=rec["manager"])]], [[rec], [boss]],
                       f"{n}'s manager is {boss['name']} ({boss['email']}, {boss['department']}).", [fn])  # fmt: skip
    if kind == 1:  # the first member of a team, then their balance
        members, balance = realise("members", rng), realise("balance", rng)
        team, lt = rng.choice(TEAMS), rng.choice(LEAVE_TYPES)
        people = [_name(rng) for _ in range(rng.randint(2, 4))]
        days = rng.randint(0, 25)
        return Example(f"Get the {team} list, then the {lt} balance of whoever is listed first.",
                       [[members.call(team=team)], [balance.call(person=people[0], leave_type=lt)]],
                       [[people], [{"name": people[0], "days_left": days}]], f"{people[0]} has {days} {lt} days left.",
                       [members, balance])  # fmt: skip
    if kind == 2:  # leave only if enough days are left
        balance, request = realise("balance", rng), realise("request_leave", rng)
        lt, need = rng.choice(LEAVE_TYPES), rng.randint(2, 5)
        s = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 20):02d}"
        e = s[:-2] + f"{int(s[-2:]) + need - 1:02d}"
        days = rng.randint(0, 25)
        first = (
            [[balance.call(person=n, leave_type=lt)]],
            [[{"name": n, "leave_type": lt, "days_left": days}]],
        )
        ask = f"Check {n}'s {lt} balance; if it covers {need} days, request {lt} leave from {s} to {e}."
        if days < need:
            return Example(
                ask,
                *first,
                f"{n} has only {days} {lt} days left, so I did not file the request.",
                [balance, request],
            )
        return Example(ask, first[0] + [[request.call(person=n, leave_type=lt, start_date=s, end_date=e)]],
                       first[1] + [[{"request_id": rng.randint(100, 999), "status": "pending"}]],
                       f"{n} had {days} {lt} days left, so I filed the request; it waits for approval.", [balance, request])  # fmt: skip
    if kind == 3:  # where someone works, then the weather or time there
        fn, other = realise("employee", rng), realise(rng.choice(["weather", "clock"]), rng)
        rec = _record(n, rng)
        thing = "weather" if other.concept == "weather" else "local time"
        return Example(f"{n} - what city are they based in, and what's the {thing} like there?",
                       [[fn.call(person=n)], [other.call(city=rec["location"])]], [[rec], [{"city": rec["location"], "value": "mild"}]],
                       f"{n} works in {rec['location']}; there it is mild now.", [fn, other])  # fmt: skip
    if kind == 4:  # free rooms, then book the smallest that fits
        free, book = realise("free_rooms", rng), realise("book", rng)
        day, h, k = _day(rng), rng.randint(8, 16), rng.choice([4, 6, 8])
        title = rng.choice(["Sync", "Review", "Kickoff"])
        rooms = sorted(({"name": r, "seats": s} for r, s in zip(rng.sample(ROOMS, 3), rng.sample([k, k + 2, k + 6, k + 10], 3), strict=True)),
                       key=lambda r: -r["seats"])  # fmt: skip
        smallest = min(rooms, key=lambda r: r["seats"])["name"]
        a, b = f"{day} {h:02d}:00", f"{day} {h + 1:02d}:00"
        return Example(f"I need a room for {k} on {day}, {h:02d}:00-{h + 1:02d}:00; reserve the smallest free one, title '{title}'.",
                       [[free.call(start=a, end=b, seats=k)], [book.call(room=smallest, start=a, end=b, title=title)]],
                       [[rooms], [{"booking_id": rng.randint(10, 99), "status": "pending approval"}]],
                       f"I booked {smallest}, the smallest free room for {k}; it waits for approval.", [free, book])  # fmt: skip
    manager, message = realise("manager", rng), realise("message", rng)  # the manager, then a message
    m = _name(rng)
    return Example(f"Tell {n}'s manager that the report is ready.",
                   [[manager.call(person=n)], [message.call(to=m, text="The report is ready.")]],
                   [[{"employee": n, "manager": m}], [{"sent": True}]], f"I told {m}, {n}'s manager, that the report is ready.",
                   [manager, message])  # fmt: skip


GENERAL = {
    "Write a haiku about autumn.": "Red leaves drift and fall,\ncool wind hums through empty trees,\nthe year exhales slow.",
    "What is the capital of Canada?": "The capital of Canada is Ottawa.",
    "What is the capital of Japan?": "The capital of Japan is Tokyo.",
    "Thanks, that's all!": "You're welcome! Ask any time.",
    "Hello there!": "Hello! How can I help?",
    "thanks a lot, bye": "You're welcome, goodbye!",
    "Explain what a leap year is.": "A leap year has 366 days: February gets a 29th day, which keeps the calendar in step with the Earth's orbit.",
    "Say hello in Spanish.": "¡Hola!",
    "What is 12 times 7?": "12 times 7 is 84.",
    "Give me a tip for a good presentation.": "Start with the one thing you want people to remember, and say it again at the end.",
    "Write one sentence about coffee.": "Coffee turns a slow morning into a plan.",
    "What does CPU stand for?": "CPU stands for central processing unit.",
    "How many days are in a week?": "A week has seven days.",
    "Suggest a name for a cat.": "How about Miso?",
}  # fmt: skip
UNFIT = [  # requests that no function in the pool does
    ("Order a pizza for the team.", "I can't order food: none of my functions does that."),
    ("Find me a train to Oslo on Friday.", "I can't search trains with the functions I have."),
    ("Call a taxi to the office.", "I have no function for taxis, so I can't do that."),
    ("Delete all my emails.", "I can't do that: none of my functions manages email."),
    ("Buy 10 shares of ACME.", "I can't trade shares with the functions I have."),
]


def _no_call(rng: random.Random) -> Example:
    if rng.random() < 0.35:
        request, answer = rng.choice(UNFIT)
    else:
        request = rng.choice(sorted(GENERAL))
        answer = GENERAL[request]
    return Example(request, answer=answer)


KINDS = ((_single, 0.45), (_parallel, 0.15), (_chained, 0.2), (_no_call, 0.2))
SYSTEMS = ("", "", "You are a helpful assistant.", "You are the company's internal assistant. Be brief.",
           "You help employees with HR and room questions.")  # fmt: skip


def _distractors(rng: random.Random, needs: list[Function], extra: int) -> list[Function]:
    taken = {f.concept for f in needs}
    return [realise(c, rng) for c in rng.sample([c for c in POOL if c not in taken], extra)]


def _exchange(ex: Example) -> list[Turn]:
    """The request, each round of calls with its results, and the answer."""
    turns = [Turn("user", ex.request)]
    for calls, outputs in zip(ex.rounds, ex.results, strict=True):
        turns.append(Turn("assistant", format_tool_calls("", calls), True))
        turns.append(
            Turn("user", format_tool_responses([json.dumps(o, ensure_ascii=False) for o in outputs]))
        )
    turns.append(Turn("assistant", ex.answer, True))
    return turns


def example(rng: random.Random, index: int) -> Conversation:
    make = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
    first = make(rng)
    exchanges = [first]
    if first.needs and rng.random() < 0.2:  # a later request in the same conversation
        exchanges.append(_no_call(rng) if rng.random() < 0.3 else _single(rng))
    needs = [f for ex in exchanges for f in ex.needs]
    unique = list({f.concept: f for f in needs}.values())
    offered = unique + _distractors(rng, unique, rng.randint(0 if unique else 1, 6))
    rng.shuffle(offered)
    # Every call names an offered function; a later exchange that needs a concept already offered
    # under another spelling uses the offered one.
    by_concept = {f.concept: f for f in offered}
    for ex in exchanges:
        for calls in ex.rounds:
            for call in calls:
                src = next(f for f in ex.needs if f.name == call["name"])
                dst = by_concept[src.concept]
                names = {v: dst.params[r] for r, v in src.params.items()}
                call["name"], call["arguments"] = (
                    dst.name,
                    {names[k]: v for k, v in call["arguments"].items()},
                )
    tools = [f.spec for f in offered]
    turns = [Turn("system", system_with_tools(rng.choice(SYSTEMS), tools))]
    for ex in exchanges:
        turns += _exchange(ex)
    return Conversation(f"toolcalls-{index:04d}", turns, source="toolcalls", extra={"tools": tools})


def generate(n: int, seed: int) -> list[Conversation]:
    rng = random.Random(seed)
    return [example(rng, i) for i in range(n)]


class ToolcallsSettings(BaseModel):
    """`agentlm data toolcalls`: how many conversations, from which seed, written where."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="Where the conversations go (JSONL).")
    examples: int = Field(default=300, ge=0, description="How many conversations to write.")
    seed: int = Field(default=0, description="Seeds every draw: the same seed writes the same file.")


@options_from(ToolcallsSettings, list(ToolcallsSettings.model_fields))
def run(**options: Any) -> None:
    """Tool-calling training conversations in the embedded model's format."""
    settings = settings_of(ToolcallsSettings, options, "agentlm data toolcalls")
    n = write_jsonl(settings.out, generate(settings.examples, settings.seed))
    print(f"wrote {n} tool-calling conversations to {settings.out}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm data toolcalls")


if __name__ == "__main__":
    main()

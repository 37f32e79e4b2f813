"""Tool-calling training conversations in the embedded model's format (``agent/toolcalls.py``).

Each example offers a few functions (drawn from a pool of HR, calendar and everyday functions, so
the model learns to read a schema rather than one fixed set), asks for something in words, and
shows the reply: one call, two calls at once, a call whose result feeds a second call, or plain
text when no function fits; then the tool results and an answer worded from them. Arguments are
taken from the request, so the model learns to copy values into the declared schema.

    python -m agentlm.data.toolcalls --out toolcalls.jsonl --examples 300 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentlm.agent.toolcalls import format_tool_calls, format_tool_responses, system_with_tools
from agentlm.data.formats import Conversation, Turn, write_jsonl
from agentlm.data.worlds import FIRST, LAST, ROOMS


def _fn(name: str, description: str, props: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required}}}  # fmt: skip


S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
LEAVE = {"type": "string", "enum": ["vacation", "sick", "personal"]}

POOL = {
    "lookup_employee": _fn("lookup_employee", "Find an employee by full name.", {"name": S}, ["name"]),
    "leave_balance": _fn("leave_balance", "Remaining leave days of an employee.", {"employee": S, "leave_type": LEAVE}, ["employee", "leave_type"]),
    "team_members": _fn("team_members", "List the members of a team.", {"team": S}, ["team"]),
    "available_rooms": _fn("available_rooms", "Rooms free in an interval.", {"start": {"type": "string", "description": "YYYY-MM-DD HH:MM"}, "end": {"type": "string", "description": "YYYY-MM-DD HH:MM"}, "seats": I}, ["start", "end"]),
    "reserve_room": _fn("reserve_room", "Book a room.", {"room": S, "start": S, "end": S, "title": S}, ["room", "start", "end", "title"]),
    "current_weather": _fn("current_weather", "Current weather in a city.", {"city": S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
    "convert_currency": _fn("convert_currency", "Convert an amount between currencies.", {"amount": {"type": "number"}, "from_currency": S, "to_currency": S}, ["amount", "from_currency", "to_currency"]),
    "send_message": _fn("send_message", "Send a chat message to a colleague.", {"to": S, "text": S}, ["to", "text"]),
    "file_leave": _fn("file_leave", "File a leave request.", {"employee": S, "leave_type": LEAVE, "start_date": S, "end_date": S}, ["employee", "leave_type", "start_date", "end_date"]),
    "manager_of": _fn("manager_of", "The manager of an employee.", {"employee": S}, ["employee"]),
    "calendar_events": _fn("calendar_events", "A person's events on a day.", {"person": S, "date": {"type": "string", "description": "YYYY-MM-DD"}}, ["person", "date"]),
    "search_policies": _fn("search_policies", "Search the HR policies.", {"query": S}, ["query"]),
}  # fmt: skip


@dataclass
class Case:
    request: str
    calls: list[list[tuple[str, dict]]]  # rounds of calls; [] means no call fits
    results: Callable[[str, dict], dict]
    answer: Callable[[list[dict]], str]
    needs: tuple[str, ...]


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _date(rng: random.Random) -> str:
    return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _cases(rng: random.Random) -> Case:
    kind = rng.randrange(12)
    n1, n2 = _name(rng), _name(rng)
    lt = rng.choice(["vacation", "sick", "personal"])
    if kind == 0:
        days = rng.randint(0, 25)
        return Case(rng.choice(["How many {t} days does {n} have left?", "{n} - remaining {t} days?", "check {n}'s {t} balance"]).format(n=n1, t=lt),
                    [[("leave_balance", {"employee": n1, "leave_type": lt})]], lambda f, a: {"employee": a["employee"], "leave_type": a["leave_type"], "remaining_days": days},
                    lambda r: f"{n1} has {days} {lt} days left.", ("leave_balance",))  # fmt: skip
    if kind == 1:
        d1, d2 = rng.randint(0, 25), rng.randint(0, 25)
        return Case(f"Compare the {lt} days left for {n1} and {n2}.",
                    [[("leave_balance", {"employee": n1, "leave_type": lt}), ("leave_balance", {"employee": n2, "leave_type": lt})]],
                    lambda f, a: {"employee": a["employee"], "remaining_days": d1 if a["employee"] == n1 else d2},
                    lambda r: f"{n1} has {d1} {lt} days left and {n2} has {d2}.", ("leave_balance",))  # fmt: skip
    if kind == 2:
        m = _name(rng)
        return Case(rng.choice(["Who is {n}'s manager?", "who does {n} report to"]).format(n=n1), [[("manager_of", {"employee": n1})]],
                    lambda f, a: {"employee": a["employee"], "manager": m}, lambda r: f"{n1}'s manager is {m}.", ("manager_of",))  # fmt: skip
    if kind == 3:
        m = _name(rng)
        return Case(f"Tell {n1}'s manager that the report is ready.", [[("manager_of", {"employee": n1})], [("send_message", {"to": m, "text": "The report is ready."})]],
                    lambda f, a: {"manager": m} if f == "manager_of" else {"sent": True},
                    lambda r: f"I told {m}, {n1}'s manager, that the report is ready.", ("manager_of", "send_message"))  # fmt: skip
    if kind == 4:
        day, h = _date(rng), rng.randint(8, 16)
        seats = rng.choice([4, 6, 8, 10])
        rooms = rng.sample(ROOMS, 2)
        return Case(f"Which rooms for {seats} people are free on {day} from {h:02d}:00 to {h + 1:02d}:00?",
                    [[("available_rooms", {"start": f"{day} {h:02d}:00", "end": f"{day} {h + 1:02d}:00", "seats": seats})]],
                    lambda f, a: {"rooms": rooms}, lambda r: f"{rooms[0]} and {rooms[1]} are free then.", ("available_rooms",))  # fmt: skip
    if kind == 5:
        day, h = _date(rng), rng.randint(8, 16)
        room, title = rng.choice(ROOMS), rng.choice(["Planning", "Retro", "Demo", "Interview"])
        return Case(f"Book {room} for a \"{title}\" on {day} from {h:02d}:00 to {h + 1:02d}:00.",
                    [[("reserve_room", {"room": room, "start": f"{day} {h:02d}:00", "end": f"{day} {h + 1:02d}:00", "title": title})]],
                    lambda f, a: {"booked": True, "room": a["room"]}, lambda r: f"{room} is booked for \"{title}\" on {day} at {h:02d}:00.", ("reserve_room",))  # fmt: skip
    if kind == 6:
        city = rng.choice(["Berlin", "Lisbon", "Tokyo", "Nairobi", "Lima", "Oslo", "Toronto"])
        unit = rng.choice(["celsius", "fahrenheit"])
        t = rng.randint(-5, 35)
        args = {"city": city, "unit": unit} if rng.random() < 0.5 else {"city": city}
        q = f"What's the weather in {city}" + (f" in {unit}?" if "unit" in args else "?")
        return Case(q, [[("current_weather", args)]], lambda f, a: {"city": city, "temperature": t, "conditions": "clear"},
                    lambda r: f"It is {t} degrees and clear in {city}.", ("current_weather",))  # fmt: skip
    if kind == 7:
        amount = rng.choice([10, 25, 99.5, 120, 1500])
        a, b = rng.sample(["EUR", "USD", "GBP", "JPY", "CHF"], 2)
        out = round(amount * rng.uniform(0.5, 1.5), 2)
        return Case(f"Convert {amount} {a} to {b}.", [[("convert_currency", {"amount": amount, "from_currency": a, "to_currency": b})]],
                    lambda f, x: {"result": out, "currency": b}, lambda r: f"{amount} {a} is {out} {b}.", ("convert_currency",))  # fmt: skip
    if kind == 8:
        s, e = sorted([_date(rng), _date(rng)])
        return Case(f"I'm {n1}. Please file {lt} leave for me from {s} to {e}.",
                    [[("file_leave", {"employee": n1, "leave_type": lt, "start_date": s, "end_date": e})]],
                    lambda f, a: {"request_id": 4242, "status": "pending"}, lambda r: f"I filed your {lt} leave from {s} to {e}; it is pending approval.", ("file_leave",))  # fmt: skip
    if kind == 9:
        team = rng.choice(["Research", "Design", "Security", "Treasury"])
        members = [_name(rng) for _ in range(3)]
        return Case(f"Who is on the {team} team?", [[("team_members", {"team": team})]], lambda f, a: {"members": members},
                    lambda r: f"The {team} team is {members[0]}, {members[1]} and {members[2]}.", ("team_members",))  # fmt: skip
    if kind == 10:
        day = _date(rng)
        return Case(f"What's on {n1}'s calendar on {day}?", [[("calendar_events", {"person": n1, "date": day})]],
                    lambda f, a: {"events": [{"title": "Sync", "start": "10:00", "end": "10:30"}]},
                    lambda r: f"{n1} has one event on {day}: Sync from 10:00 to 10:30.", ("calendar_events",))  # fmt: skip
    q = rng.choice(
        [
            "Write a haiku about autumn.",
            "What is the capital of Canada?",
            "Thanks, that's all!",
            "Explain what a leap year is.",
            "Say hello in French.",
        ]
    )
    answers = {"Write a haiku about autumn.": "Red leaves drift and fall,\ncool wind hums through empty trees,\nthe year exhales slow.",
               "What is the capital of Canada?": "The capital of Canada is Ottawa.", "Thanks, that's all!": "You're welcome! Ask any time.",
               "Explain what a leap year is.": "A leap year has 366 days: February gets a 29th day, which keeps the calendar in step with the Earth's orbit.",
               "Say hello in French.": "Bonjour !"}  # fmt: skip
    return Case(q, [], lambda f, a: {}, lambda r: answers[q], ())


def example(rng: random.Random, index: int) -> Conversation:
    case = _cases(rng)
    distractors = [n for n in POOL if n not in case.needs]
    offered = [*case.needs, *rng.sample(distractors, rng.randint(1, 4))]
    rng.shuffle(offered)
    tools = [POOL[n] for n in offered]
    system = rng.choice(
        ["", "", "You are a helpful assistant.", "You are the company's internal assistant. Be brief."]
    )
    turns = [Turn("system", system_with_tools(system, tools)), Turn("user", case.request)]
    results: list[dict] = []
    for round_calls in case.calls:
        calls = [{"name": name, "arguments": args} for name, args in round_calls]
        turns.append(Turn("assistant", format_tool_calls("", calls), True))
        outputs = [case.results(name, args) for name, args in round_calls]
        results += outputs
        turns.append(
            Turn("user", format_tool_responses([json.dumps(o, ensure_ascii=False) for o in outputs]))
        )
    turns.append(Turn("assistant", case.answer(results), True))
    return Conversation(f"toolcalls-{index:04d}", turns, source="toolcalls")


def generate(n: int, seed: int) -> list[Conversation]:
    rng = random.Random(seed)
    return [example(rng, i) for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agentlm data toolcalls", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = write_jsonl(args.out, generate(args.examples, args.seed))
    print(f"wrote {n} tool-calling conversations to {args.out}")


if __name__ == "__main__":
    main()

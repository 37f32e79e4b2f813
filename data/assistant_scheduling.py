"""Assistant tasks over the calendar: free rooms, who is busy, a day's meetings, rooms, bookings.

Times are said as people say them ("on May 4th 2026, 1pm to 2:30pm"); the free-rooms question may
be followed by "which is biggest?" or by booking one of them, and "is X free?" by the same hours on
another day. Bookings are writes that wait for approval; questions the calendar cannot answer
(wifi passwords, room prices) are refused plainly.

Each kind returns a ``Task`` (``data/asktask.py``); ``SCHEDULING_KINDS`` weighs them with the
counting and one-meeting kinds of ``data/assistant_stats.py``, and ``data/assistant.py`` runs them
against a world.
"""

from __future__ import annotations

import random

from agentlm.data.asktask import Person, Rows, Step, Task, number, pick, some_person
from agentlm.data.assistant_stats import SCHEDULING_STATS_KINDS, free_rooms_biggest
from agentlm.data.hr_tasks import join_words
from agentlm.data.worlds import World


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


SCHEDULING_KINDS = SCHEDULING_STATS_KINDS + [(free_rooms, 4), (busy, 3), (day_meetings, 2), (room_info, 2), (booking, 3), (free_rooms_then_book, 2),
                    (calendar_unanswerable, 1)]  # fmt: skip

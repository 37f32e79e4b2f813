"""A task run against the SQL tool, as the conversation turns that teach it.

Each SQL step becomes an assistant reply (trained on) and the tool's observation; writes (leave
requests, bookings) become further statements once the ids are known; the last reply is the answer
worded from the rows. Every reply is checked to parse, with the agent's own parser, to the action it
was written for, and a step that fails, or returns rows it should not (or none where it needs some),
raises ``AssistantDataError`` so the caller can draw another task.
"""

from __future__ import annotations

import random

from agentlm.agent.actions import FinalAnswer, ParsedReply, answer_reply, operation_reply, parse_db_reply
from agentlm.agent.tools.sql import SQLTool
from agentlm.agent.trajectory import ToolCall
from agentlm.data.asktask import AssistantDataError, Rows, Task, vary
from agentlm.data.formats import Turn


def _checked(reply: str, expected: ParsedReply) -> str:
    parsed = parse_db_reply(reply, repair=False)
    if parsed != expected:
        raise AssistantDataError(f"the reply parses to {parsed}, not {expected}:\n{reply}")
    return reply


def run_task(task: Task, tool: SQLTool) -> tuple[list[Turn], str]:
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

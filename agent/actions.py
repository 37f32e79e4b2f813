"""Parsing the model's replies into actions, in AgentLM's text protocol.

AgentLM checkpoints were trained on AgentBench v0.2's formats, so the agent speaks them exactly.
The database protocol (AgentBench dbbench) is::

    <thoughts>
    Action: Operation
    ```sql
    SELECT ...;
    ```

or, to finish::

    <thoughts>
    Action: Answer
    Final Answer: ["ANSWER1", ...]

A reply that fits neither becomes an ``InvalidAction`` that carries a hint for the model; the loop
turns it into an observation instead of failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentlm.agent.trajectory import ToolCall

_ACTION = re.compile(r"Action:\s*(\w+)", re.IGNORECASE)
_SQL_BLOCK = re.compile(r"```sql\s*\n(.*?)\n?```", re.IGNORECASE | re.DOTALL)
_FINAL_ANSWER = re.compile(r"Final Answer:\s*(.*)", re.IGNORECASE | re.DOTALL)

DB_FORMAT_HINT = (
    "Your reply did not match the required format. To run SQL, write your thoughts, then\n"
    "Action: Operation\n```sql\nSELECT ...;\n```\n"
    "To finish, write\nAction: Answer\nFinal Answer: <your answer>"
)


@dataclass
class FinalAnswer:
    text: str


@dataclass
class InvalidAction:
    hint: str  # shown to the model as the observation


@dataclass
class ParsedReply:
    thought: str
    action: ToolCall | FinalAnswer | InvalidAction


def parse_db_reply(reply: str) -> ParsedReply:
    """Parse a reply in the AgentBench dbbench protocol.

    As in AgentBench, only the first SQL block runs; newlines inside it become spaces.
    """
    match = _ACTION.search(reply)
    thought = (reply[: match.start()] if match else reply).strip()
    if match is None:
        return ParsedReply(thought, InvalidAction(DB_FORMAT_HINT))
    kind = match.group(1).lower()
    rest = reply[match.end() :]
    if kind == "operation":
        block = _SQL_BLOCK.search(rest)
        if block is None or not block.group(1).strip():
            return ParsedReply(
                thought, InvalidAction("No ```sql block after 'Action: Operation'. " + DB_FORMAT_HINT)
            )
        sql = block.group(1).strip().replace("\n", " ")
        return ParsedReply(thought, ToolCall(name="sql", input=sql))
    if kind == "answer":
        final = _FINAL_ANSWER.search(rest)
        if final is None:
            return ParsedReply(
                thought, InvalidAction("No 'Final Answer:' after 'Action: Answer'. " + DB_FORMAT_HINT)
            )
        return ParsedReply(thought, FinalAnswer(final.group(1).strip()))
    return ParsedReply(thought, InvalidAction(f"Unknown action {match.group(1)!r}. " + DB_FORMAT_HINT))

"""Parsing the model's replies into actions, in AgentLM's text protocols, and repairing near misses.

AgentLM checkpoints were trained on AgentBench v0.2's formats, so the agent reads them exactly.

Database (dbbench)::

    <thoughts>
    Action: Operation
    ```sql
    SELECT ...;
    ```

or ``Action: Answer`` then ``Final Answer: [...]``. Only the first SQL block runs; newlines inside it
become spaces.

Operating system (os_interaction)::

    Think: <thought>

    Act: bash

    ```bash
    <code>
    ```

or ``Act: finish``, or ``Act: answer(<answer>)``. As in AgentBench, the last ``Act:`` line wins; an
answer is the text between the first ``(`` and the last ``)`` of its line; every ```bash block in the
reply runs, joined by a blank line.

A reply that fits no format is repaired when one of its lines is close to a valid action line by
sentence BLEU (sacrebleu), as AgentTuning repaired malformed actions: the line is replaced by the
valid one and the reply parsed again, and ``ParsedReply.repair`` records what changed. When nothing
is close enough, the action is an ``InvalidAction`` whose hint tells the model the expected format;
the loop shows it as the observation instead of failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sacrebleu

from agentlm.agent.trajectory import ToolCall

# A repair needs this much character-level BLEU (0-100) with the best valid action line, and a
# clear lead over the runner-up, so that "Act: bsh" becomes "Act: bash" but "The answer is 18"
# stays an invalid reply.
REPAIR_MIN_BLEU = 50.0
REPAIR_MIN_MARGIN = 10.0

DB_FORMAT_HINT = (
    "Your reply did not match the required format. To run SQL, write your thoughts, then\n"
    "Action: Operation\n```sql\nSELECT ...;\n```\n"
    "To finish, write\nAction: Answer\nFinal Answer: <your answer>"
)
OS_FORMAT_HINT = (
    "Your reply did not match the required format. Write\nThink: <your thought>\n\nthen exactly one of\n"
    "Act: bash\n\n```bash\n<commands>\n```\nor\nAct: finish\nor\nAct: answer(<your answer>)"
)

_DB_ACTIONS = ("Action: Operation", "Action: Answer")
_OS_ACTIONS = ("Act: bash", "Act: finish", "Act: answer")
# A line that looks like "<Key>: <word>...", the shape of an action line, and is not a thought.
_ACTION_LIKE = re.compile(r"^\s*(?!think\b|final answer\b)([A-Za-z][A-Za-z ]{1,14}?)\s*:\s*(\w+)(.*)$", re.I)


@dataclass
class FinalAnswer:
    text: str | None  # None: the model said it finished without an answer (OS "Act: finish")


@dataclass
class InvalidAction:
    hint: str  # shown to the model as the observation


@dataclass
class Repair:
    """A malformed action line replaced by the closest valid one."""

    original: str
    repaired: str
    bleu: float


@dataclass
class ParsedReply:
    thought: str
    action: ToolCall | FinalAnswer | InvalidAction
    repair: Repair | None = None


def bleu(hypothesis: str, reference: str, tokenize: str = "13a") -> float:
    """Sentence BLEU (0-100) of `hypothesis` against one reference, smoothed as sacrebleu does."""
    return sacrebleu.sentence_bleu(hypothesis, [reference], tokenize=tokenize).score


def closest_action(
    text: str, valid: list[str] | tuple[str, ...], tokenize: str = "13a"
) -> tuple[str, float, float]:
    """The valid action closest to `text` by sentence BLEU: (action, its score, the runner-up's).

    AgentTuning mapped a malformed action onto the environment's admissible actions this way;
    `tokenize="char"` suits short keywords and tool names.
    """
    if not valid:
        raise ValueError("closest_action needs at least one valid action")
    scored = sorted(((bleu(text.lower(), v.lower(), tokenize), v) for v in valid), reverse=True)
    runner_up = scored[1][0] if len(scored) > 1 else 0.0
    return scored[0][1], scored[0][0], runner_up


def _repair_line(reply: str, valid: tuple[str, ...]) -> tuple[str, Repair] | None:
    """Replace the action-like line closest to a valid action line; None if none is close enough."""
    best: tuple[float, int, str, str] | None = None
    lines = reply.split("\n")
    for i, line in enumerate(lines):
        m = _ACTION_LIKE.match(line)
        if m is None:
            continue
        head = f"{m.group(1).strip()}: {m.group(2)}"
        action, score, runner_up = closest_action(head, valid, tokenize="char")
        close = score >= REPAIR_MIN_BLEU and score - runner_up >= REPAIR_MIN_MARGIN
        if close and head != action and (best is None or score > best[0]):
            best = (score, i, action + m.group(3), line)
    if best is None:
        return None
    score, i, repaired, original = best
    lines[i] = repaired
    return "\n".join(lines), Repair(original, repaired, round(score, 1))


def _with_repair(reply: str, parse, valid: tuple[str, ...]) -> ParsedReply:
    parsed = parse(reply)
    if not isinstance(parsed.action, InvalidAction):
        return parsed
    fixed = _repair_line(reply, valid)
    if fixed is None:
        return parsed
    reparsed = parse(fixed[0])
    if isinstance(reparsed.action, InvalidAction):
        return parsed
    reparsed.repair = fixed[1]
    return reparsed


# --- database protocol ---------------------------------------------------------------------------

_DB_ACTION = re.compile(r"Action:\s*(\w+)", re.IGNORECASE)
_SQL_BLOCK = re.compile(r"```sql\s*\n(.*?)\n?```", re.IGNORECASE | re.DOTALL)
_FINAL_ANSWER = re.compile(r"Final Answer:\s*(.*)", re.IGNORECASE | re.DOTALL)


def _parse_db(reply: str) -> ParsedReply:
    match = _DB_ACTION.search(reply)
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
        return ParsedReply(thought, ToolCall(name="sql", input=block.group(1).strip().replace("\n", " ")))
    if kind == "answer":
        final = _FINAL_ANSWER.search(rest)
        if final is None:
            return ParsedReply(
                thought, InvalidAction("No 'Final Answer:' after 'Action: Answer'. " + DB_FORMAT_HINT)
            )
        return ParsedReply(thought, FinalAnswer(final.group(1).strip()))
    return ParsedReply(thought, InvalidAction(f"Unknown action {match.group(1)!r}. " + DB_FORMAT_HINT))


def parse_db_reply(reply: str, repair: bool = True) -> ParsedReply:
    """Parse a reply in the AgentBench dbbench protocol."""
    return _with_repair(reply, _parse_db, _DB_ACTIONS) if repair else _parse_db(reply)


# --- operating-system protocol -------------------------------------------------------------------

_THINK = re.compile(r"Think:\s*(.+)")
_OS_ACT = re.compile(r"Act:\s*(.+)")
_BASH_BLOCK = re.compile(r"```bash\n(.*?)\n```", re.DOTALL)


def _parse_os(reply: str) -> ParsedReply:
    thought = "\n".join(_THINK.findall(reply)).strip()
    for act in reversed(_OS_ACT.findall(reply)):  # the last valid Act: line wins
        kind = act.lower()
        if kind.startswith("bash"):
            code = "\n\n".join(_BASH_BLOCK.findall(reply))
            if not code.strip():
                return ParsedReply(
                    thought, InvalidAction("No ```bash block after 'Act: bash'. " + OS_FORMAT_HINT)
                )
            return ParsedReply(thought, ToolCall(name="bash", input=code))
        if kind.startswith("finish"):
            return ParsedReply(thought, FinalAnswer(None))
        if kind.startswith("answer"):
            content = act[6:].strip()
            left, right = content.find("("), content.rfind(")")
            if left == -1 or right == -1:
                continue  # AgentBench skips an answer without parentheses and looks further up
            return ParsedReply(thought, FinalAnswer(content[left + 1 : right]))
    return ParsedReply(thought, InvalidAction(OS_FORMAT_HINT))


def parse_os_reply(reply: str, repair: bool = True) -> ParsedReply:
    """Parse a reply in the AgentBench os_interaction protocol."""
    return _with_repair(reply, _parse_os, _OS_ACTIONS) if repair else _parse_os(reply)


PARSERS = {"db": parse_db_reply, "os": parse_os_reply}


# --- writing replies -----------------------------------------------------------------------------
# The inverse of the parsers: the one place that writes a reply in a protocol, for training data
# and for the earlier answers of a multi-turn conversation.


def operation_reply(thought: str, sql: str) -> str:
    """A database-protocol reply that runs `sql`."""
    return f"{thought}\nAction: Operation\n```sql\n{sql}\n```".lstrip("\n")


def bash_reply(thought: str, script: str) -> str:
    """An OS-protocol reply that runs `script` in the shell."""
    return f"Think: {thought}\n\nAct: bash\n\n```bash\n{script}\n```"


def answer_reply(protocol: str, answer: str, thought: str = "") -> str:
    """A reply that commits to `answer` in `protocol` ("db", "os", or "tools": the plain text)."""
    if protocol == "db":
        return f"{thought}\nAction: Answer\nFinal Answer: {answer}".lstrip("\n")
    if protocol == "os":
        return f"Think: {thought or 'I have the answer.'}\n\nAct: answer({answer})"
    if protocol == "tools":
        return answer
    raise ValueError(f"unknown protocol {protocol!r}: expected 'db', 'os' or 'tools'")

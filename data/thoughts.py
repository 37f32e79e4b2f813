"""Thought supplementation: give ReAct steps that lack a thought one, from a teacher, marked as such.

AgentTuning supplemented thoughts for trajectories collected without them (so every step reads
"thought, then action"). A step lacks a thought when, in the DB protocol, nothing comes before
``Action:``, or, in the OS protocol, there is no ``Think:`` line. The teacher (any OpenAI-
compatible endpoint) sees the conversation so far and the action, and writes one sentence; it is
inserted before the action, and the record gets ``"thought_supplemented": true`` so a mix can be
inspected or filtered (``agentlm data stats`` shows the share).

    python -m agentlm.data.thoughts --data traj.jsonl --out with_thoughts.jsonl --teacher gpt-4o --base-url URL
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlm.agent.models import ChatModel, GenerationParams, OpenAIChatModel
from agentlm.options import invoke, options_from, settings_of

_DB_ACTION = re.compile(r"^\s*Action:", re.I)
_OS_THINK = re.compile(r"^\s*Think:", re.I | re.M)
ASK = (
    "Here is an agent's next action in the conversation above:\n\n{action}\n\n"
    "Write the one or two sentences of reasoning the agent should state before this action. "
    "Reply with the reasoning only."
)


def lacks_thought(reply: str) -> bool:
    if "Act:" in reply:
        return not _OS_THINK.search(reply)
    return bool(_DB_ACTION.match(reply))


def _with_thought(reply: str, thought: str) -> str:
    thought = " ".join(thought.split())
    return f"Think: {thought}\n\n{reply.lstrip()}" if "Act:" in reply else f"{thought}\n{reply.lstrip()}"


def supplement(
    record: dict[str, Any], teacher: ChatModel, params: GenerationParams | None = None
) -> dict[str, Any]:
    """The record with a thought added to each of its own (``loss: true``) replies that lack one."""
    params = params or GenerationParams(max_tokens=96, temperature=0.0)
    turns = record["conversations"]
    changed = False
    for i, turn in enumerate(turns):
        if turn["from"] != "gpt" or turn.get("loss") is not True or not lacks_thought(turn["value"]):
            continue
        history = [
            {"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
            for t in turns[:i]
        ]
        ask = {"role": "user", "content": ASK.format(action=turn["value"])}
        thought = teacher.complete([*history, ask], params).text.strip()
        if thought:
            turns[i] = {**turn, "value": _with_thought(turn["value"], thought)}
            changed = True
    return {**record, "conversations": turns, "thought_supplemented": True} if changed else record


PROG = "agentlm data thoughts"


class ThoughtsSettings(BaseModel):
    """What `agentlm data thoughts` takes: one field an option."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="AgentInstruct-format JSONL.")
    out: Path = Field(description="Where the records, thoughts supplemented, are written (JSONL).")
    teacher: str = Field(description="The teacher's model id.")
    base_url: str = Field(description="Its OpenAI-compatible endpoint.")
    api_key: str = Field(default="EMPTY", description="The endpoint's API key.")


@options_from(ThoughtsSettings, ThoughtsSettings.model_fields)
def run(**options: Any) -> None:
    """Give actions that lack a thought one from a teacher, marked as such."""
    settings = settings_of(ThoughtsSettings, options, PROG)
    teacher = OpenAIChatModel(settings.teacher, settings.base_url, api_key=settings.api_key)
    n = changed = 0
    with settings.out.open("w", encoding="utf-8") as out:
        for line in settings.data.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = supplement(json.loads(line), teacher)
            changed += bool(record.get("thought_supplemented"))
            n += 1
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{changed} of {n} records had thoughts supplemented -> {settings.out}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, PROG)


if __name__ == "__main__":
    main()

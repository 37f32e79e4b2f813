"""Training conversations: AgentInstruct's record format, read and written with clear errors.

A record is ``{"id", "conversations": [{"from": "human"|"gpt", "loss": null|true|false, "value"}]}``
(THUDM/AgentInstruct). ``loss`` is true on a trajectory's own assistant turns and false on turns the
model should see but not learn from (a 1-shot example, the database task's "Ok."). ShareGPT
records are the same without ``loss``. AgentLM adds an optional ``source`` (where a record came
from, for mixing reports); other readers ignore it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentlm.agent.actions import answer_reply
from agentlm.agent.trajectory import ChatMessage, Trajectory

ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
FROM_OF = {"user": "human", "assistant": "gpt", "system": "system"}


class DataFormatError(ValueError):
    """A record that is not in the expected format; the message names file, record and field."""


@dataclass
class Turn:
    role: Literal["system", "user", "assistant"]
    content: str
    loss: bool | None = None  # None: the default for the role (learn from assistant turns only)

    def trainable(self, honour_loss_flag: bool = True) -> bool:
        if self.role != "assistant":
            return False
        return self.loss is not False if honour_loss_flag else True


@dataclass
class Conversation:
    id: str
    turns: list[Turn]
    source: str = ""
    # Other top-level fields of the record (a collector's reward, repaired_steps, ...), kept as
    # they were so that filtering, mixing and decontaminating a file lose nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[ChatMessage]:
        return [{"role": t.role, "content": t.content} for t in self.turns]

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "conversations": [
                {"from": FROM_OF[t.role], "loss": t.loss, "value": t.content} for t in self.turns
            ],
        }
        if self.source:
            record["source"] = self.source
        return record | {k: v for k, v in self.extra.items() if k not in record}

    @classmethod
    def from_record(cls, record: Any, where: str = "record") -> Conversation:
        if not isinstance(record, dict):
            raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
        turns_raw = record.get("conversations")
        if not isinstance(turns_raw, list) or not turns_raw:
            raise DataFormatError(f"{where}: field 'conversations' must be a non-empty list of turns")
        turns = []
        for i, t in enumerate(turns_raw):
            if not isinstance(t, dict):
                raise DataFormatError(
                    f"{where}: conversations[{i}] must be an object with 'from' and 'value'"
                )
            role = ROLE_OF.get(t.get("from"))  # type: ignore[arg-type]
            if role is None:
                raise DataFormatError(
                    f"{where}: conversations[{i}].from is {t.get('from')!r}; expected 'human' or 'gpt'"
                )
            value = t.get("value")
            if not isinstance(value, str):
                raise DataFormatError(f"{where}: conversations[{i}].value must be a string")
            loss = t.get("loss")
            if loss is not None and not isinstance(loss, bool):
                raise DataFormatError(f"{where}: conversations[{i}].loss must be true, false or null")
            turns.append(Turn(role, value, loss))  # type: ignore[arg-type]
        extra = {k: v for k, v in record.items() if k not in ("id", "conversations", "source")}
        return cls(
            id=str(record.get("id", where)), turns=turns, source=str(record.get("source", "")), extra=extra
        )


def context_turns(messages: list[ChatMessage]) -> list[Turn]:
    """Messages the model sees but does not learn from (an opening prompt, a conversation's earlier
    turns): assistant turns get ``loss: false``, the others the role's default."""
    return [Turn(m["role"], m["content"], False if m["role"] == "assistant" else None) for m in messages]


def read_jsonl(path: str | Path) -> list[Conversation]:
    """Read a JSONL (one record a line) or JSON (a list of records) file of conversations."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(records, list):
            raise DataFormatError(f"{path}: a .json file must hold a list of records")
        return [Conversation.from_record(r, f"{path} record {i + 1}") for i, r in enumerate(records)]
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path} line {n}: not valid JSON ({e})") from e
        out.append(Conversation.from_record(record, f"{path} line {n}"))
    return out


def write_jsonl(path: str | Path, conversations: Iterable[Conversation]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for conv in conversations:
            f.write(json.dumps(conv.to_record(), ensure_ascii=False) + "\n")
            n += 1
    return n


def conversation_from_trajectory(traj: Trajectory, use_correction: bool = True) -> Conversation:
    """A trajectory as a training conversation in AgentInstruct's shape.

    The opening prompt's assistant turns ("Ok.", a 1-shot example) and, in a multi-turn
    conversation, the earlier answers (``traj.history``: context the model saw, learnt from in
    their own runs' records) get ``loss: false``; the run's own replies ``loss: true``. When the
    user gave a corrected answer, the final reply states it instead of the model's answer, in the
    run's protocol; when they corrected a step, the conversation ends with the reply they wrote
    for it (what followed answered the wrong reply). A system message, if the run had one, is dropped: AgentInstruct records carry
    none, the chat template supplies it.

    Raises ``DataFormatError`` for tool-calling runs (``protocol: tools``), whose tool messages
    have no AgentInstruct form.
    """
    if traj.protocol == "tools":
        raise DataFormatError(
            f"trajectory {traj.id}: tool-calling runs have no AgentInstruct form; export text-protocol runs"
        )
    context = [m for m in (*traj.prompt, *traj.history) if m["role"] != "system"]
    turns = context_turns(context)
    turns.append(Turn("user", traj.task))
    fb = traj.feedback
    step_fix = fb.corrected_step if use_correction and fb is not None else None
    for position, step in enumerate(traj.steps):
        if position == step_fix:  # the reply it should have been ends the conversation
            turns.append(Turn("assistant", fb.corrected_output or "", True))  # type: ignore[union-attr]
            break
        for m in step.messages():
            turns.append(Turn(m["role"], m["content"], True if m["role"] == "assistant" else None))
    if use_correction and fb is not None and fb.corrected_answer and turns[-1].role == "assistant":
        thought = traj.steps[-1].thought if traj.steps else ""
        turns[-1] = Turn("assistant", answer_reply(traj.protocol, fb.corrected_answer, thought), True)
    return Conversation(id=traj.id, turns=turns, source=f"trajectories/{traj.profile}")

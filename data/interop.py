"""Data in and out of other projects' formats.

- **AgentInstruct** (THUDM/AgentInstruct): splits os 195, db 538, alfworld 336, webshop 351, kg 324,
  mind2web 122, and no ``train`` split. ``load_agentinstruct`` reads a local file (JSON, JSONL or
  Parquet), a directory of per-split files (named by split: ``os.json``, ``db-00000.parquet``, ...),
  or a Hugging Face hub id through ``datasets`` when the machine has internet.
- **LLaMA-Factory ``sharegpt``**: ``{"conversations": [{"from": "human" | "gpt" | "function_call" |
  "observation", "value"}], "system": ..., "tools": "<JSON string>"}``. ``to_llamafactory`` writes
  conversations and tool-calling trajectories (``function_call`` is ``{"name", "arguments"}`` as
  JSON, ``observation`` the tool's output); ``from_llamafactory`` reads text records back into
  conversations, and tool records too when asked to keep tool turns as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentlm.agent.trajectory import Trajectory
from agentlm.data.formats import Conversation, DataFormatError, Turn, conversation_from_trajectory

AGENTINSTRUCT_SPLITS = {"os": 195, "db": 538, "alfworld": 336, "webshop": 351, "kg": 324, "mind2web": 122}


def _records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not JSON, JSONL or Parquet ({e})") from e


def _split_of(path: Path) -> str | None:
    stem = path.name.split(".")[0].split("-")[0].lower()
    return stem if stem in AGENTINSTRUCT_SPLITS else None


def load_agentinstruct(source: str | Path, splits: list[str] | None = None) -> dict[str, list[Conversation]]:
    """AgentInstruct conversations by split, from a file, a directory of split files, or a hub id."""
    wanted = splits or list(AGENTINSTRUCT_SPLITS)
    unknown = sorted(set(wanted) - set(AGENTINSTRUCT_SPLITS))
    if unknown:
        raise DataFormatError(
            f"unknown AgentInstruct split(s) {', '.join(unknown)}: the splits are {', '.join(AGENTINSTRUCT_SPLITS)} "
            "(there is no 'train' split)"
        )
    path = Path(source)
    if path.is_file():
        split = _split_of(path) or "all"
        return {
            split: [
                Conversation.from_record(r, f"{path} record {i + 1}") for i, r in enumerate(_records(path))
            ]
        }
    if path.is_dir():
        out: dict[str, list[Conversation]] = {}
        for file in sorted(path.rglob("*")):
            split = _split_of(file)
            if split in wanted and file.suffix in (".json", ".jsonl", ".parquet"):
                out.setdefault(split, []).extend(
                    Conversation.from_record(r, f"{file} record {i + 1}")
                    for i, r in enumerate(_records(file))
                )
        if not out:
            raise DataFormatError(
                f"{path}: no files named after an AgentInstruct split ({', '.join(wanted)})"
            )
        return out
    if "/" in str(source) and not str(source).startswith((".", "/")):
        return _from_hub(str(source), wanted)
    raise DataFormatError(f"{source}: no such file or directory (or give a Hugging Face hub id)")


def _from_hub(repo_id: str, splits: list[str]) -> dict[str, list[Conversation]]:
    try:
        import datasets
    except ImportError as e:
        raise DataFormatError(
            f"loading {repo_id} from the hub needs the `datasets` package (pip install datasets) and "
            "internet; or download the files and pass their directory"
        ) from e
    loaded = datasets.load_dataset(repo_id)
    return {
        split: [
            Conversation.from_record(r, f"{repo_id}:{split} record {i + 1}")
            for i, r in enumerate(loaded[split])
        ]
        for split in splits
        if split in loaded
    }


# --- LLaMA-Factory sharegpt -------------------------------------------------------------------------

_LF_FROM = {"user": "human", "assistant": "gpt"}


def to_llamafactory(item: Conversation | Trajectory) -> dict[str, Any]:
    """One LLaMA-Factory sharegpt record; tool-calling trajectories keep their calls and tools."""
    if isinstance(item, Trajectory) and item.protocol == "tools":
        turns: list[dict[str, str]] = [{"from": "human", "value": item.task}]
        for m in (m for s in item.steps for m in s.messages()):
            if m["role"] == "assistant" and m.get("tool_calls"):
                function = m["tool_calls"][0]["function"]
                call = {"name": function["name"], "arguments": json.loads(function["arguments"] or "{}")}
                turns.append({"from": "function_call", "value": json.dumps(call, ensure_ascii=False)})
            elif m["role"] == "tool":
                turns.append({"from": "observation", "value": m["content"]})
            else:
                turns.append({"from": _LF_FROM[m["role"]], "value": m["content"]})
        record: dict[str, Any] = {"conversations": turns, "tools": json.dumps(item.tools, ensure_ascii=False)}
        system = [m["content"] for m in item.prompt if m["role"] == "system"]
        if system:
            record["system"] = system[0]
        return record
    conv = conversation_from_trajectory(item) if isinstance(item, Trajectory) else item
    system = [t.content for t in conv.turns if t.role == "system"]
    record = {
        "conversations": [
            {"from": _LF_FROM[t.role], "value": t.content} for t in conv.turns if t.role != "system"
        ]
    }
    if system:
        record["system"] = system[0]
    return record


def from_llamafactory(
    record: dict[str, Any], where: str = "record", tool_turns: str = "refuse"
) -> Conversation:
    """A LLaMA-Factory sharegpt record as a conversation.

    Tool turns have no place in AgentLM's text conversations: by default they are refused (naming
    the record); ``tool_turns="text"`` keeps a call as an assistant turn (its JSON) and an
    observation as a user turn.
    """
    turns_raw = record.get("conversations")
    if not isinstance(turns_raw, list) or not turns_raw:
        raise DataFormatError(f"{where}: field 'conversations' must be a non-empty list of turns")
    turns = [Turn("system", record["system"])] if record.get("system") else []
    for i, t in enumerate(turns_raw):
        kind, value = t.get("from"), t.get("value")
        if not isinstance(value, str):
            raise DataFormatError(f"{where}: conversations[{i}].value must be a string")
        if kind in ("human", "gpt"):
            turns.append(Turn("user" if kind == "human" else "assistant", value))
        elif kind in ("function_call", "observation"):
            if tool_turns != "text":
                raise DataFormatError(
                    f"{where}: conversations[{i}] is a {kind} turn; AgentLM trains on text protocols "
                    "(pass tool_turns='text' to keep tool turns as text)"
                )
            turns.append(Turn("assistant" if kind == "function_call" else "user", value))
        else:
            raise DataFormatError(
                f"{where}: conversations[{i}].from is {kind!r}; expected human, gpt, function_call or observation"
            )
    return Conversation(str(record.get("id", where)), turns)

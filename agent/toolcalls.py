"""The tool-calling text format: how tools, calls and results are written for a model without a
native function-calling format (the embedded Gemma 3 270M), and read back from its replies.

The format is Hermes-style tags inside the model's own chat turns, the convention Qwen, Hermes and
vLLM's ``hermes`` parser use:

- the tools are described once, after the system text, in a ``<tools>`` block (one JSON schema a line);
- a reply that calls tools holds one ``<tool_call>`` block a call, each a JSON object
  ``{"name": ..., "arguments": {...}}``, optionally after some text;
- each result comes back in a ``<tool_response>`` block, in a user turn of its own.

Training data (data/assistant.py) and serving (the chat template) both write through these
functions, so the model is served exactly what it was trained on.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"

TOOLS_PREAMBLE = (
    "You can call these functions. Their signatures, as JSON schema:\n<tools>\n{tools}\n</tools>\n"
    "To call functions, reply with one <tool_call> block for each call, holding a JSON object with "
    "the function's name and its arguments:\n"
    '<tool_call>\n{{"name": "<function name>", "arguments": {{<arguments>}}}}\n</tool_call>\n'
    "Each result comes back in a <tool_response> block. When you have what you need, or no function "
    "fits the request, answer in plain text."
)


def function_spec(tool: dict[str, Any]) -> dict[str, Any]:
    """The function part of an OpenAI tool spec ({"type": "function", "function": {...}}) or of a bare one."""
    return tool.get("function", tool)


def tools_preamble(tools: list[dict[str, Any]]) -> str:
    """The text that tells the model which functions it may call (goes after the system text)."""
    lines = []
    for tool in tools:
        f = function_spec(tool)
        spec = {
            "name": f["name"],
            "description": f.get("description", ""),
            "parameters": f.get("parameters", {}),
        }
        lines.append(json.dumps(spec, ensure_ascii=False))
    return TOOLS_PREAMBLE.format(tools="\n".join(lines))


def system_with_tools(system: str, tools: list[dict[str, Any]] | None) -> str:
    """The system text followed by the tools preamble (when there are tools)."""
    if not tools:
        return system
    return f"{system}\n\n{tools_preamble(tools)}" if system else tools_preamble(tools)


def format_tool_calls(content: str, calls: list[dict[str, Any]]) -> str:
    """An assistant turn: its text, then one block a call. `calls` are OpenAI ``tool_calls`` entries
    (or bare ``{"name", "arguments"}``); arguments may be a JSON string or an object."""
    blocks = []
    for call in calls:
        f = call.get("function", call)
        args = f.get("arguments", {})
        if isinstance(args, str):
            args = json.loads(args or "{}")
        body = json.dumps({"name": f["name"], "arguments": args}, ensure_ascii=False)
        blocks.append(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")
    text = content.strip()
    return "\n".join([text, *blocks] if text else blocks)


def format_tool_responses(contents: list[str]) -> str:
    """One user turn carrying the results of consecutive tool messages, in order."""
    return "\n".join(f"{TOOL_RESPONSE_OPEN}\n{c.strip()}\n{TOOL_RESPONSE_CLOSE}" for c in contents)


# --- reading replies -----------------------------------------------------------------------------
# The inverse of format_tool_calls, for serving: a reply's text back into OpenAI tool calls.

CALL_SEPARATOR = "\n"  # between two blocks of one reply, as format_tool_calls writes them
CALL_SUFFIX = "}\n" + TOOL_CALL_CLOSE  # what ends a block after its arguments


def call_prefix(name: str) -> str:
    """A block's text up to its arguments: what format_tool_calls writes before them for `name`."""
    return f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '


def new_call_id() -> str:
    """A tool call's id, in OpenAI's shape ("call_" and random hex)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(body: str) -> dict[str, Any] | None:
    """The OpenAI tool call a block's body holds, or None if it is not one."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if not isinstance(value.get("arguments"), dict):
        return None
    function = {"name": value["name"], "arguments": json.dumps(value["arguments"], ensure_ascii=False)}
    return {"id": new_call_id(), "type": "function", "function": function}


def _possible_open(text: str) -> int:
    """How many characters at the end of `text` could be the start of a block's opening tag."""
    return next((k for k in range(len(TOOL_CALL_OPEN) - 1, 0, -1) if text.endswith(TOOL_CALL_OPEN[:k])), 0)


class ToolCallStream:
    """Splits a reply streamed as text into content and tool calls, as vLLM's streaming tool parsers do.

    Content passes through as it comes, except text that may be the start of a ``<tool_call>``
    block (and the whitespace before it), which is held until the next text decides. A block is
    held whole until its ``</tool_call>``; then it becomes a call if its body is a JSON object with
    a string ``name`` and an object ``arguments``, and is passed on as content otherwise (nothing
    the model wrote is lost). The whitespace between content and a call, or between calls, is dropped.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []  # every call so far
        self._held = ""

    def push(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """Add streamed text; returns the content that can be sent now and the calls it completed."""
        pending, content, calls = self._held + text, [], []
        while True:
            start = pending.find(TOOL_CALL_OPEN)
            if start < 0:
                hold = len(pending) - _possible_open(pending)
                hold = len(pending[:hold].rstrip())
                content.append(pending[:hold])
                pending = pending[hold:]
                break
            end = pending.find(TOOL_CALL_CLOSE, start)
            if end < 0:  # a block is open: send what came before it, hold the rest
                lead = len(pending[:start].rstrip())
                content.append(pending[:lead])
                pending = pending[lead:]
                break
            after = end + len(TOOL_CALL_CLOSE)
            call = _call(pending[start + len(TOOL_CALL_OPEN) : end])
            if call is None:
                content.append(pending[:after])
            else:
                content.append(pending[:start].rstrip())
                calls.append(call)
            pending = pending[after:]
        self._held = pending
        self.calls.extend(calls)
        return "".join(content), calls

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end of the reply: the held text (an unfinished block stays content), and any last calls."""
        content, calls = self.push("")
        rest, self._held = self._held, ""
        if self.calls:
            rest = rest.lstrip()  # the whitespace after the last call
        return content + rest, calls


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """A whole reply as (content, OpenAI tool calls): each ``<tool_call>`` block whose body is
    ``{"name": <string>, "arguments": <object>}`` is a call with a new id; the text outside the
    blocks, and any malformed block, is the content."""
    stream = ToolCallStream()
    content, calls = stream.push(text)
    rest, more = stream.finish()
    return content + rest, calls + more

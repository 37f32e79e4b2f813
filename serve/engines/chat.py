"""A chat request's prompt and its ends on the embedded engine: the chat template with the tools it
offers, the tokens and end-of-turn markers that end a reply, and the streamed reply's tool calls."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentlm.agent.toolcalls import ToolCallStream
from agentlm.agent.trajectory import ChatMessage
from agentlm.data.templates import TEMPLATES, get_template, turn_format
from agentlm.serve.engines.base import GenerationChunk, GenerationRequest, UnsupportedFeatureError
from agentlm.serve.engines.grammar import offers_tools


def chat_prompt(tokenizer: Any, req: GenerationRequest, model_id: str) -> str:
    """A chat request's prompt: its messages (and the tools it offers) through the chat template."""
    tools = req.tools if offers_tools(req.tools, req.tool_choice) else None
    if not tools and not any(m["role"] == "tool" or m.get("tool_calls") for m in req.messages):
        return tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
    template = tokenizer.chat_template
    if "tools" in template:  # it renders tools itself: AgentLM's templates, Qwen's, ...
        return tokenizer.apply_chat_template(
            arguments_as_objects(req.messages), tools=tools, add_generation_prompt=True, tokenize=False
        )
    # A template written before AgentLM's rendered tools (an older checkpoint, the converted
    # embedded model's first cache): AgentLM's own template of the same turn format renders them.
    name = turn_format(template)
    if name is None:
        raise UnsupportedFeatureError(
            f"{model_id}'s chat template cannot render tools or tool messages; serve a "
            "checkpoint whose chat template takes `tools` (AgentLM's own templates do)"
        )
    return get_template(name).render_prompt(req.messages, tools)


def stop_token_ids(tokenizer: Any, template_stops: list[str], checkpoint: Path | None) -> set[int]:
    """The end-of-sequence ids the checkpoint's configs and tokenizer name, and the template's
    end-of-turn markers that are one token."""
    ids: set[int] = set()
    sources: list[Any] = [tokenizer.eos_token_id]
    for name in ("config.json", "generation_config.json") if checkpoint else ():
        with contextlib.suppress(OSError, ValueError):
            sources.append(json.loads((checkpoint / name).read_text()).get("eos_token_id"))
    for eos in sources:
        ids.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    for stop in template_stops:  # an end-of-turn marker that is one token ends the reply too
        token = tokenizer.convert_tokens_to_ids(stop)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            ids.add(token)
    return ids


def template_stops(chat_template: str) -> list[str]:
    """The end-of-turn markers of our known templates that this chat template uses."""
    return sorted({s for t in TEMPLATES.values() for s in t.stop if s in chat_template})


def arguments_as_objects(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The messages with each tool call's JSON ``arguments`` string parsed into an object, as vLLM
    hands them to a chat template (Jinja cannot parse JSON; the templates write it with tojson)."""
    out: list[ChatMessage] = []
    for m in messages:
        calls = []
        for call in m.get("tool_calls") or []:
            function = dict(call.get("function", {}))
            if isinstance(function.get("arguments"), str):
                with contextlib.suppress(ValueError):  # not JSON: the template writes it as it is
                    function["arguments"] = json.loads(function["arguments"] or "{}")
            calls.append({**call, "function": function})
        out.append({**m, "tool_calls": calls} if calls else m)  # type: ignore[typeddict-item]
    return out


def split_calls(parser: ToolCallStream, chunk: GenerationChunk) -> GenerationChunk:
    """A chunk of the reply's text as content and the tool calls it completed; the last chunk of a
    reply that called tools finishes with "tool_calls"."""
    text, calls = parser.push(chunk.text)
    finish = chunk.finish_reason
    if finish is not None:
        rest, more = parser.finish()
        text, calls = text + rest, calls + more
        if parser.calls and finish == "stop":
            finish = "tool_calls"
    return replace(chunk, text=text, tool_calls=calls or None, finish_reason=finish)

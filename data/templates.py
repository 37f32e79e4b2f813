"""Chat templates, rendered two ways that must agree: Python segments for loss masks, Jinja for serving.

Training renders a conversation into segments, each marked trainable or not, and labels the
tokens that overlap trainable text. Serving renders with the tokenizer's ``chat_template``, which
the training recipe writes into every checkpoint from the same ``ChatTemplate``. A test checks the
two renderings are identical, so the model is served exactly the format it learnt.

- ``llama-2``: Llama-2-chat, as AgentLM was trained (FastChat's ``llama-2`` template), with the
  model card's fixed system prompt when the conversation brings none.
- ``vicuna_v1.1``: FastChat's Vicuna v1.1 format (``USER: ... ASSISTANT: ...</s>``), the other
  format AgentBench evaluated chat models in.
- ``gemma``: Gemma's own turn format, for the embedded Gemma 3 270M base model.

Tool calling (OpenAI ``tools``, assistant ``tool_calls``, ``tool`` messages) renders in the text
format of ``agent/toolcalls.py`` inside these turns: the tools preamble after the system text, an
assistant's calls as ``<tool_call>`` blocks after its text, and a run of consecutive tool messages
as one user turn of ``<tool_response>`` blocks. The Jinja side takes ``tools`` as transformers'
``apply_chat_template(messages, tools=...)`` passes them and writes JSON with its ``tojson``
(``json.dumps`` with ``ensure_ascii=False``), so both sides write the same bytes; a call's
``arguments`` should be an object there (as vLLM passes them): a JSON string is written as it is.

Renderings are FastChat 0.2.31's (the version AgentBench pinned) with the BOS token written out, as
the serving path tokenizes the rendered text without adding special tokens; a test compares them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentlm.agent.toolcalls import (
    TOOLS_PREAMBLE,
    format_tool_calls,
    format_tool_responses,
    system_with_tools,
)
from agentlm.agent.trajectory import ChatMessage
from agentlm.data.formats import Turn

AGENTLM_SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."


@dataclass
class Segment:
    text: str
    trainable: bool


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    jinja: str
    stop: tuple[str, ...]  # text that ends an assistant turn; generation stops there

    def render(self, turns: list[Turn], honour_loss_flag: bool = True) -> list[Segment]:
        return _RENDERERS[self.name](turns, honour_loss_flag)

    def render_prompt(self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """The text the model continues from: the conversation plus the assistant's turn opener.
        `messages` are OpenAI chat messages (tool calls and tool results included); `tools` are
        OpenAI tool specs, offered to the model in the system text."""
        turns = self.chat_turns(messages, tools)
        return "".join(s.text for s in _RENDERERS[self.name](turns, True)) + _GENERATION_PROMPT[self.name]

    def chat_turns(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None
    ) -> list[Turn]:
        """The turns this template renders for OpenAI chat messages (see ``chat_turns``)."""
        return chat_turns(messages, tools, _DEFAULT_SYSTEM[self.name])


def chat_turns(
    messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None, default_system: str = ""
) -> list[Turn]:
    """OpenAI chat messages as the turns a template renders: an assistant's tool calls written
    after its text, each run of tool messages as one user turn of results, and the tools preamble
    after the system text (the template's default system text when the conversation has none)."""
    turns: list[Turn] = []
    results: list[str] = []  # consecutive tool messages, waiting to become one user turn
    for m in messages:
        if m["role"] == "tool":
            results.append(m.get("content") or "")
            continue
        if results:
            turns.append(Turn("user", format_tool_responses(results)))
            results = []
        content = m.get("content") or ""
        if m["role"] == "assistant" and m.get("tool_calls"):
            content = format_tool_calls(content, m["tool_calls"])
        turns.append(Turn(m["role"], content))  # type: ignore[arg-type]
    if results:
        turns.append(Turn("user", format_tool_responses(results)))
    if tools:
        if turns and turns[0].role == "system":
            turns[0] = Turn("system", system_with_tools(turns[0].content, tools))
        else:
            turns.insert(0, Turn("system", system_with_tools(default_system, tools)))
    return turns


# --- the Jinja side of tool calling, shared by the templates -------------------------------------
# Each piece writes what its agent/toolcalls.py function writes; the tests compare the two.


def _jinja_string(text: str) -> str:
    """`text` as a Jinja string literal (Jinja reads Python's escapes, which json.dumps writes)."""
    return json.dumps(text)


_PREAMBLE_HEAD, _PREAMBLE_TAIL = (part.format() for part in TOOLS_PREAMBLE.split("{tools}"))

# After `system` is set: the tools preamble goes after it (system_with_tools).
_TOOLS_SYSTEM_JINJA = (
    "{%- if tools -%}"
    "{%- set tool_lines -%}"
    "{%- for t in tools -%}{%- set f = t.get('function', t) -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{{ {'name': f['name'], 'description': f.get('description', ''), 'parameters': f.get('parameters', {})}"
    " | tojson }}"
    "{%- endfor -%}"
    "{%- endset -%}"
    "{%- set preamble = "
    + _jinja_string(_PREAMBLE_HEAD)
    + " + tool_lines + "
    + _jinja_string(_PREAMBLE_TAIL)
    + " -%}"
    "{%- set system = (system + '\\n\\n' + preamble) if system else preamble -%}"
    "{%- endif -%}"
)

# Sets `content` to an assistant message's text and its tool calls (format_tool_calls).
_ASSISTANT_CONTENT_JINJA = (
    "{%- set content -%}"
    "{{ (m['content'] or '') | trim }}"
    "{%- for c in m.get('tool_calls') or [] -%}"
    "{%- set f = c.get('function', c) -%}{%- set args = f.get('arguments', {}) -%}"
    "{%- if (m['content'] or '') | trim or not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{{ '<tool_call>\\n' }}"
    "{%- if args is string -%}{{ '{\"name\": ' + (f['name'] | tojson) + ', \"arguments\": ' + (args or '{}') + '}' }}"
    "{%- else -%}{{ {'name': f['name'], 'arguments': args} | tojson }}{%- endif -%}"
    "{{ '\\n</tool_call>' }}"
    "{%- endfor -%}"
    "{%- endset -%}"
)


def _tool_results_jinja(open_turn: str, close_turn: str) -> str:
    """A tool message: the first of a run opens a user turn (`open_turn`, Jinja), the last closes
    it (`close_turn`, Jinja), and each is one <tool_response> block (format_tool_responses)."""
    return (
        "{%- if loop.first or loop.previtem['role'] != 'tool' -%}"
        + open_turn
        + "{%- else -%}{{ '\\n' }}{%- endif -%}"
        "{{ '<tool_response>\\n' + ((m['content'] or '') | trim) + '\\n</tool_response>' }}"
        "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}" + close_turn + "{%- endif -%}"
    )


def _split_system(turns: list[Turn], default: str) -> tuple[str, list[Turn]]:
    if turns and turns[0].role == "system":
        return turns[0].content, turns[1:]
    return default, turns


def _render_llama2(turns: list[Turn], honour_loss_flag: bool) -> list[Segment]:
    system, rest = _split_system(turns, AGENTLM_SYSTEM_PROMPT)
    out = [Segment("<s>", False)]
    for i, turn in enumerate(rest):
        if turn.role == "user":
            opener = "[INST] " if i > 0 or not system else f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"
            out.append(Segment(f"{opener}{turn.content.strip()} [/INST]", False))
        elif turn.role == "assistant":
            # The reply and its end-of-sequence are what the model learns; "<s>" opens the next turn
            # (FastChat's llama-2 template ends every assistant turn with " </s><s>" too).
            out.append(Segment(f" {turn.content.strip()} </s>", turn.trainable(honour_loss_flag)))
            out.append(Segment("<s>", False))
        else:
            raise ValueError(f"llama-2 template: a {turn.role!r} turn can only come first")
    return out


_LLAMA2_USER_OPEN = (
    "{%- if loop.first and system -%}{{ '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}"
    "{%- else -%}{{ '[INST] ' }}{%- endif -%}"
)

LLAMA2_JINJA = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '"
    + AGENTLM_SYSTEM_PROMPT
    + "' -%}{%- endif -%}"
    + _TOOLS_SYSTEM_JINJA
    + "<s>"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}" + _LLAMA2_USER_OPEN + "{{ m['content'] | trim }}{{ ' [/INST]' }}"
    "{%- elif m['role'] == 'assistant' -%}"
    + _ASSISTANT_CONTENT_JINJA
    + "{{ ' ' + (content | trim) + ' </s><s>' }}"
    "{%- elif m['role'] == 'tool' -%}"
    + _tool_results_jinja(_LLAMA2_USER_OPEN, "{{ ' [/INST]' }}")
    + "{%- endif -%}"
    "{%- endfor -%}"
)


def _render_gemma(turns: list[Turn], honour_loss_flag: bool) -> list[Segment]:
    # Gemma has no system role: a system message opens the first user turn, as Gemma's own template does.
    system, rest = _split_system(turns, "")
    out = [Segment("<bos>", False)]
    for i, turn in enumerate(rest):
        if turn.role == "user":
            prefix = f"{system}\n\n" if i == 0 and system else ""
            out.append(Segment(f"<start_of_turn>user\n{prefix}{turn.content.strip()}<end_of_turn>\n", False))
        elif turn.role == "assistant":
            out.append(Segment("<start_of_turn>model\n", False))
            out.append(Segment(f"{turn.content.strip()}<end_of_turn>", turn.trainable(honour_loss_flag)))
            out.append(Segment("\n", False))
        else:
            raise ValueError(f"gemma template: a {turn.role!r} turn can only come first")
    return out


_GEMMA_USER_OPEN = (
    "{{ '<start_of_turn>user\\n' }}{%- if loop.first and system -%}{{ system + '\\n\\n' }}{%- endif -%}"
)

GEMMA_JINJA = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- endif -%}" + _TOOLS_SYSTEM_JINJA + "<bos>"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}" + _GEMMA_USER_OPEN + "{{ m['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- elif m['role'] == 'assistant' -%}"
    + _ASSISTANT_CONTENT_JINJA
    + "{{ '<start_of_turn>model\\n' + (content | trim) + '<end_of_turn>\\n' }}"
    "{%- elif m['role'] == 'tool' -%}"
    + _tool_results_jinja(_GEMMA_USER_OPEN, "{{ '<end_of_turn>\\n' }}")
    + "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

VICUNA_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def _render_vicuna(turns: list[Turn], honour_loss_flag: bool) -> list[Segment]:
    system, rest = _split_system(turns, VICUNA_SYSTEM_PROMPT)
    out = [Segment(f"<s>{system} ", False)]
    for turn in rest:
        if turn.role == "user":
            out.append(Segment(f"USER: {turn.content.strip()} ", False))
        elif turn.role == "assistant":
            # The space after "ASSISTANT:" is the reply's: served prompts end at "ASSISTANT:", so the
            # model writes it, and Llama's tokenizer gives it a token of its own before a digit ("▁", "1").
            out.append(Segment("ASSISTANT:", False))
            out.append(Segment(f" {turn.content.strip()}</s>", turn.trainable(honour_loss_flag)))
        else:
            raise ValueError(f"vicuna_v1.1 template: a {turn.role!r} turn can only come first")
    return out


VICUNA_JINJA = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
    '{%- else -%}{%- set system = "'
    + VICUNA_SYSTEM_PROMPT
    + '" -%}{%- endif -%}'
    + _TOOLS_SYSTEM_JINJA
    + "{{ '<s>' + system + ' ' }}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{ 'USER: ' + (m['content'] | trim) + ' ' }}"
    "{%- elif m['role'] == 'assistant' -%}"
    + _ASSISTANT_CONTENT_JINJA
    + "{{ 'ASSISTANT: ' + (content | trim) + '</s>' }}"
    "{%- elif m['role'] == 'tool' -%}" + _tool_results_jinja("{{ 'USER: ' }}", "{{ ' ' }}") + "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

_RENDERERS = {"llama-2": _render_llama2, "vicuna_v1.1": _render_vicuna, "gemma": _render_gemma}
# The system text each template renders when the conversation brings none.
_DEFAULT_SYSTEM = {"llama-2": AGENTLM_SYSTEM_PROMPT, "vicuna_v1.1": VICUNA_SYSTEM_PROMPT, "gemma": ""}
# What follows a rendered conversation when the assistant speaks next.
_GENERATION_PROMPT = {"llama-2": "", "vicuna_v1.1": "ASSISTANT:", "gemma": "<start_of_turn>model\n"}

TEMPLATES = {
    "llama-2": ChatTemplate("llama-2", LLAMA2_JINJA, stop=("</s>",)),
    "vicuna_v1.1": ChatTemplate("vicuna_v1.1", VICUNA_JINJA, stop=("</s>",)),
    "gemma": ChatTemplate("gemma", GEMMA_JINJA, stop=("<end_of_turn>",)),
}


_TURN_MARKERS = (("gemma", "<start_of_turn>"), ("llama-2", "[INST]"), ("vicuna_v1.1", "ASSISTANT:"))


def turn_format(chat_template: str) -> str | None:
    """The AgentLM template whose turn format a chat template writes (None if none fits): the
    same turns as today's, also for a template an older AgentLM wrote into a checkpoint."""
    exact = next((name for name, t in TEMPLATES.items() if t.jinja == chat_template), None)
    return exact or next((name for name, marker in _TURN_MARKERS if marker in chat_template), None)


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}: use one of {', '.join(TEMPLATES)}") from None

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

Renderings are FastChat 0.2.31's (the version AgentBench pinned) with the BOS token written out, as
the serving path tokenizes the rendered text without adding special tokens; a test compares them.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def render_prompt(self, messages: list[ChatMessage]) -> str:
        """The text the model continues from: the conversation plus the assistant's turn opener."""
        turns = [Turn(m["role"], m["content"]) for m in messages]
        return "".join(s.text for s in _RENDERERS[self.name](turns, True)) + _GENERATION_PROMPT[self.name]


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


LLAMA2_JINJA = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '" + AGENTLM_SYSTEM_PROMPT + "' -%}{%- endif -%}"
    "<s>"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if loop.first and system -%}{{ '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}"
    "{%- else -%}{{ '[INST] ' }}{%- endif -%}"
    "{{ m['content'] | trim }}{{ ' [/INST]' }}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{ ' ' + (m['content'] | trim) + ' </s><s>' }}"
    "{%- endif -%}"
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


GEMMA_JINJA = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- endif -%}"
    "<bos>"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{{ '<start_of_turn>user\\n' }}{%- if loop.first and system -%}{{ system + '\\n\\n' }}{%- endif -%}"
    "{{ m['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{ '<start_of_turn>model\\n' + (m['content'] | trim) + '<end_of_turn>\\n' }}"
    "{%- endif -%}"
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
    '{%- else -%}{%- set system = "' + VICUNA_SYSTEM_PROMPT + '" -%}{%- endif -%}'
    "{{ '<s>' + system + ' ' }}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{ 'USER: ' + (m['content'] | trim) + ' ' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ 'ASSISTANT: ' + (m['content'] | trim) + '</s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

_RENDERERS = {"llama-2": _render_llama2, "vicuna_v1.1": _render_vicuna, "gemma": _render_gemma}
# What follows a rendered conversation when the assistant speaks next.
_GENERATION_PROMPT = {"llama-2": "", "vicuna_v1.1": "ASSISTANT:", "gemma": "<start_of_turn>model\n"}

TEMPLATES = {
    "llama-2": ChatTemplate("llama-2", LLAMA2_JINJA, stop=("</s>",)),
    "vicuna_v1.1": ChatTemplate("vicuna_v1.1", VICUNA_JINJA, stop=("</s>",)),
    "gemma": ChatTemplate("gemma", GEMMA_JINJA, stop=("<end_of_turn>",)),
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}: use one of {', '.join(TEMPLATES)}") from None

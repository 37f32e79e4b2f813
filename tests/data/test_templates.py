"""Training renders (Python segments) and serving renders (Jinja) must be the same text."""

import jinja2
import pytest
from tiny import build_tokenizer

from agentlm.agent.toolcalls import (
    format_tool_calls,
    format_tool_responses,
    system_with_tools,
    tools_preamble,
)
from agentlm.data.formats import Conversation, Turn
from agentlm.data.masks import IGNORE_INDEX, tokenize_conversation
from agentlm.data.templates import AGENTLM_SYSTEM_PROMPT, TEMPLATES, get_template

CONVERSATIONS = [
    [Turn("user", "hi"), Turn("assistant", " hello "), Turn("user", "q2"), Turn("assistant", "a2")],
    [Turn("system", "Be brief."), Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "q2")],
    [Turn("system", ""), Turn("user", "hi"), Turn("assistant", "hello")],
    [Turn("user", "only a question")],
]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("turns", CONVERSATIONS)
def test_python_and_jinja_renderings_are_identical(name, turns):
    template = get_template(name)
    messages = [{"role": t.role, "content": t.content} for t in turns]
    jinja = jinja2.Environment().from_string(template.jinja)
    assert "".join(s.text for s in template.render(turns)) == jinja.render(
        messages=messages, add_generation_prompt=False
    )
    assert template.render_prompt(messages) == jinja.render(messages=messages, add_generation_prompt=True)


# --- tool calling: tools offered, assistant tool calls, tool results ------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": 'Wetter für <city> & "Umgebung"',  # non-ASCII, HTML and quotes: tojson must not escape
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "clock"}}  # no description, no parameters


def _call(call_id: str, name: str, arguments: dict | str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


ASKED = {"role": "user", "content": "Weather in Zürich and the time?"}
CALLED = {
    "role": "assistant",
    "content": "Checking. ",
    "tool_calls": [_call("c1", "weather", {"city": "Zürich", "days": 2}), _call("c2", "clock", "{}")],
}
ANSWERED = [
    {"role": "tool", "tool_call_id": "c1", "content": " sunny, 21°C "},
    {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
]
TOOL_CONVERSATIONS = [
    ([ASKED], [WEATHER, CLOCK]),
    ([{"role": "system", "content": "Be brief."}, ASKED], [WEATHER]),
    ([{"role": "system", "content": ""}, ASKED], [CLOCK]),
    ([ASKED, CALLED, *ANSWERED], [WEATHER, CLOCK]),
    (
        [ASKED, {**CALLED, "content": None}, ANSWERED[0], {"role": "assistant", "content": "Sunny."}],
        [WEATHER],
    ),
    # No tools offered now, but the conversation holds calls and their results.
    ([ASKED, CALLED, *ANSWERED, {"role": "assistant", "content": "Sunny, noon."}, ASKED], None),
    ([ASKED, {**CALLED, "tool_calls": [_call("c1", "weather", '{"city": "Bern"}')]}, ANSWERED[0]], [WEATHER]),
]


def _transformers_jinja(template, messages, tools, add_generation_prompt):
    """The template rendered as transformers (and so vLLM) renders it: its own Jinja environment
    and `tojson`, with `tools` as apply_chat_template passes them."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=template.jinja,
        add_generation_prompt=add_generation_prompt,
    )
    return rendered[0]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize(("messages", "tools"), TOOL_CONVERSATIONS)
def test_tool_conversations_render_the_same_in_python_and_jinja(name, messages, tools):
    template = get_template(name)
    prompt = template.render_prompt(messages, tools=tools)
    assert prompt == _transformers_jinja(template, messages, tools, add_generation_prompt=True)
    # Training renders the same turns (without the assistant's opener) through the segments.
    segments = template.render(template.chat_turns(messages, tools))
    assert "".join(s.text for s in segments) == _transformers_jinja(
        template, messages, tools, add_generation_prompt=False
    )


def test_tool_conversations_render_in_the_toolcalls_format():
    messages, tools = TOOL_CONVERSATIONS[3]
    prompt = get_template("gemma").render_prompt(messages, tools=tools)
    calls = [_call("c1", "weather", {"city": "Zürich", "days": 2}), _call("c2", "clock", {})]
    assert prompt == (
        f"<bos><start_of_turn>user\n{tools_preamble(tools)}\n\n{ASKED['content']}<end_of_turn>\n"
        f"<start_of_turn>model\n{format_tool_calls('Checking.', calls)}<end_of_turn>\n"
        f"<start_of_turn>user\n{format_tool_responses(['sunny, 21°C', '12:00'])}<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    llama = get_template("llama-2").render_prompt(messages[:1], tools=tools)
    assert llama.startswith(f"<s>[INST] <<SYS>>\n{system_with_tools(AGENTLM_SYSTEM_PROMPT, tools)}\n<</SYS>>")
    assert '"description": "Wetter für <city> & \\"Umgebung\\""' in prompt  # tojson escaped nothing else


def test_the_tokenizer_chat_template_renders_tools_as_training_did(tokenizer):
    for messages, tools in TOOL_CONVERSATIONS:
        served = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
        assert served == get_template("llama-2").render_prompt(messages, tools=tools)


def test_llama2_matches_fastchat_layout_with_the_model_card_system_prompt():
    text = get_template("llama-2").render_prompt(
        [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ]
    )
    assert (
        text
        == f"<s>[INST] <<SYS>>\n{AGENTLM_SYSTEM_PROMPT}\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]"
    )


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(ValueError, match="llama-2"):
        get_template("chatml")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(
        ["The quick brown fox jumps over the lazy dog. Action: Answer Final Answer: 18"] * 20
    )


def test_labels_cover_only_trainable_assistant_turns(tokenizer):
    conv = Conversation(
        "x",
        [
            Turn("user", "instruction"),
            Turn("assistant", "Ok.", loss=False),
            Turn("user", "question"),
            Turn("assistant", "Final Answer: 18", loss=True),
        ],
    )
    ex = tokenize_conversation(tokenizer, get_template("llama-2"), conv)
    learnt = tokenizer.decode(
        [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert learnt.strip() == "Final Answer: 18 </s>"
    assert all(label in (IGNORE_INDEX, tok) for tok, label in zip(ex.input_ids, ex.labels, strict=True))

    everything = tokenize_conversation(tokenizer, get_template("llama-2"), conv, honour_loss_flag=False)
    learnt_all = tokenizer.decode(
        [t for t, lab in zip(everything.input_ids, everything.labels, strict=True) if lab != IGNORE_INDEX]
    )
    assert "Ok." in learnt_all and "Final Answer: 18" in learnt_all
    assert "instruction" not in learnt_all and "question" not in learnt_all


def _bundled_conversations() -> list[Conversation]:
    from agentlm.data.bundle import GENERAL_CHAT, HR_TRAJECTORIES, bundled_path
    from agentlm.data.formats import read_jsonl

    return read_jsonl(bundled_path(HR_TRAJECTORIES)) + read_jsonl(bundled_path(GENERAL_CHAT))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_renderings_agree_on_every_bundled_conversation(name):
    template = get_template(name)
    jinja = jinja2.Environment().from_string(template.jinja)
    for conv in _bundled_conversations():
        messages = conv.messages()
        assert "".join(s.text for s in template.render(conv.turns)) == jinja.render(
            messages=messages, add_generation_prompt=False
        ), conv.id
        assert template.render_prompt(messages[:-1]) == jinja.render(
            messages=messages[:-1], add_generation_prompt=True
        ), conv.id


def test_the_tokenizer_chat_template_serves_what_training_rendered(tokenizer):
    # transformers renders with its own Jinja environment; the checkpoint's template must agree too.
    for conv in _bundled_conversations()[:5]:
        messages = conv.messages()[:-1]
        served = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert served == get_template("llama-2").render_prompt(messages), conv.id


def test_a_bundled_trajectory_learns_its_own_replies_only(tokenizer):
    conv = _bundled_conversations()[0]  # hr-0001: instruction, "Ok." (loss false), question, replies
    ex = tokenize_conversation(tokenizer, get_template("llama-2"), conv)
    learnt = tokenizer.decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX]
    )
    for turn in conv.turns:
        if turn.role == "assistant" and turn.loss:
            assert turn.content in learnt
    assert "Ok." not in learnt and conv.turns[2].content not in learnt and "[/INST]" not in learnt
    assert ex.trainable_tokens < len(ex.input_ids) // 2


def test_gemma_masks_exclude_the_turn_openers(tokenizer):
    conv = Conversation("g", [Turn("user", "question"), Turn("assistant", "Final Answer: 18")])
    ex = tokenize_conversation(tokenizer, get_template("gemma"), conv)
    learnt = tokenizer.decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX]
    )
    assert "Final Answer: 18<end_of_turn>" in learnt
    assert "question" not in learnt and "<start_of_turn>model" not in learnt


@pytest.mark.parametrize(
    ("name", "fastchat_name", "system"),
    [("llama-2", "llama-2", AGENTLM_SYSTEM_PROMPT), ("vicuna_v1.1", "vicuna_v1.1", None)],
)
@pytest.mark.parametrize("turns", CONVERSATIONS)
def test_renderings_are_fastchat_0_2_31s(name, fastchat_name, system, turns):
    """FastChat 0.2.31 (the version AgentBench pinned) renders the same text; ours writes the BOS."""
    from fastchat.conversation import get_conv_template

    conv = get_conv_template(fastchat_name)
    body = list(turns)
    if body and body[0].role == "system":
        conv.set_system_message(body.pop(0).content)
    elif system is not None:
        conv.set_system_message(system)
    for turn in body:
        conv.append_message(conv.roles[0] if turn.role == "user" else conv.roles[1], turn.content.strip())
    if body[-1].role == "user":
        conv.append_message(conv.roles[1], None)
        ours = get_template(name).render_prompt([{"role": t.role, "content": t.content} for t in turns])
    else:
        ours = "".join(s.text for s in get_template(name).render(list(turns)))
        if name == "llama-2":
            ours = ours.removesuffix("<s>")  # FastChat's llama-2 prompt ends after " </s><s>" only mid-chat
    expected = "<s>" + conv.get_prompt()
    if name == "llama-2" and body[-1].role == "assistant":
        expected = expected.removesuffix("<s>")
    assert ours == expected

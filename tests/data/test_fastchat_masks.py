"""Loss masks are FastChat 0.2.31's (the version AgentBench pinned), token for token.

The tokenizer. FastChat's trainer measures spans by tokenizing pieces of the rendering and
subtracting hard-coded offsets (``- 2`` for the BOS and the lone "▁" that ends "ASSISTANT: "), which
only hold for Llama's SentencePiece tokenizer in legacy mode (a "▁" prefix on every stretch of text,
also after ``</s>``). The tests train a small SentencePiece BPE model with Llama-2's settings and use
it twice: FastChat gets the slow, sentencepiece-backed tokenizer its ``train()`` loads
(``use_fast=False``, ``pad_token = unk_token``); ours gets the same model converted to a fast
``LlamaTokenizer`` (legacy), since our masks need offsets. Both must give the same input ids.

vicuna_v1.1 is compared with ``fastchat.train.train.preprocess`` itself, with
``honour_loss_flag=False`` (FastChat trains every assistant reply; it has no per-turn flag).

llama-2 cannot be: that ``preprocess`` hard-codes ``get_conversation_template("vicuna")`` and asserts
``SeparatorStyle.ADD_COLON_TWO``, and FastChat 0.2.31 has no other trainer for Llama-2's layout. So
our llama-2 masks are compared with the same rule (each assistant reply and its closing ``</s>``
trained, everything else masked) applied to FastChat's llama-2 rendering the way FastChat's trainer
measures spans: by counting the slow tokenizer's tokens in FastChat's renderings of conversation
prefixes ("... [/INST]" before a reply, "... </s><s>" after it).

Where we differ from FastChat, the difference is asserted exactly:
- a conversation that ends on a user turn: FastChat's turn split finds no "ASSISTANT: " in the last
  turn, its token count falls short, and it masks the whole conversation ("tokenization mismatch");
  we train its replies.
"""

from __future__ import annotations

import inspect

import pytest

from agentlm.data.formats import Conversation, Turn
from agentlm.data.masks import IGNORE_INDEX, tokenize_conversation
from agentlm.data.templates import AGENTLM_SYSTEM_PROMPT, get_template

DB_INSTRUCTION = (
    "I will ask you a question, then you should help me operate a MySQL database with SQL to answer "
    "the question.\nYou have to explain the problem and your solution to me and write down your "
    "thoughts.\nAfter thinking and explaining thoroughly, every round you can choose to operate or "
    "to answer.\nyour operation should be like this:\nAction: Operation\n```sql\nSELECT * FROM table "
    'WHERE condition;\n```\nIf you have obtained the answer, answer like "Action: Answer\n'
    'Final Answer: ["ANSWER1", "ANSWER2", ...]".'
)
OS_INSTRUCTION = (
    "You are an assistant that will act like a person, I'will play the role of linux(ubuntu) operating "
    "system. Your goal is to implement the operations required by me or answer to the question "
    "proposed by me.\nFor each of your turn, you should first think what you should do, and then take "
    'exact one of the three actions: "bash", "finish" or "answer".'
)

CONVERSATIONS = {
    # AgentInstruct: the instruction, a one-shot "Ok." (loss false), then the task's rounds.
    "agentinstruct-db": [
        Turn("user", DB_INSTRUCTION),
        Turn("assistant", "Ok.", loss=False),
        Turn("user", "How many employees work in Sales?\nTable information: employees(id, name, dept)"),
        Turn(
            "assistant",
            "I need to count the rows whose dept is Sales.\nAction: Operation\n```sql\n"
            "SELECT COUNT(*) FROM employees WHERE dept = 'Sales';\n```",
        ),
        Turn("user", "[(18,)]"),
        Turn("assistant", "There are 18 of them.\nAction: Answer\nFinal Answer: [18]"),
    ],
    "agentinstruct-os": [
        Turn("user", OS_INSTRUCTION),
        Turn("assistant", "Ok.", loss=False),
        Turn("user", "How many files are in /etc?"),
        Turn("assistant", "Think: I should list them.\n\nAct: bash\n\n```bash\nls -1 /etc | wc -l\n```"),
        Turn("user", "The output of the OS:\n214"),
        Turn("assistant", "Think: the count is 214.\n\nAct: answer(214)"),
    ],
    # Replies that start with a digit: Llama's tokenizer writes their leading space as a lone "▁".
    "multi-turn-chat": [
        Turn("user", "  Give me three steps to boil an egg. "),
        Turn("assistant", "1. Boil water.\n2. Put the egg in.\n3. Wait 9 minutes."),
        Turn("user", "And in Python?"),
        Turn("assistant", "def boil(egg):\n    water = heat()\n    return water.add(egg)"),
        Turn("user", "How many minutes again?"),
        Turn("assistant", "9 minutes, then cool it in cold water."),
    ],
    "system": [
        Turn("system", "You are a terse database agent."),
        Turn("user", "Count the rows."),
        Turn("assistant", "Action: Operation\n```sql\nSELECT COUNT(*) FROM t;\n```"),
        Turn("user", "[(3,)]"),
        Turn("assistant", "Action: Answer\nFinal Answer: [3]"),
    ],
    "one-round": [Turn("user", "What is 6 times 7?"), Turn("assistant", "42")],
}


def _corpus() -> list[str]:
    texts = []
    for turns in CONVERSATIONS.values():
        for name in ("vicuna_v1.1", "llama-2"):
            texts.append("".join(s.text for s in get_template(name).render(turns)))
    return [line for text in texts for line in text.split("\n") if line] * 4


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> str:
    """A SentencePiece BPE model trained with Llama-2's tokenizer settings, on the conversations."""
    import sentencepiece as spm

    prefix = tmp_path_factory.mktemp("llama-sp") / "tokenizer"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=700,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return f"{prefix}.model"


@pytest.fixture(scope="module")
def fastchat_tokenizer(sp_model):
    """What FastChat's train() loads: Llama's slow tokenizer (legacy), padded on the right with <unk>."""
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    tok = SentencePieceBackend(
        vocab_file=sp_model,
        legacy=True,
        special_tokens_pattern="bos",  # LlamaTokenizer's add_bos_token
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=1024,
        padding_side="right",
    )
    tok.pad_token = tok.unk_token
    return tok


@pytest.fixture(scope="module")
def our_tokenizer(sp_model):
    """The same model as a fast LlamaTokenizer (legacy), which gives the offsets our masks use."""
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    vocab, _, merges = SentencePieceExtractor(sp_model).extract()
    return LlamaTokenizer(
        vocab=vocab, merges=merges, legacy=True, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def _fastchat_vicuna(tokenizer, turns: list[Turn], monkeypatch) -> tuple[list[int], list[int]]:
    """Input ids and labels from FastChat 0.2.31's own trainer, padding cut off."""
    import fastchat.train.train as fastchat_train
    from fastchat.conversation import get_conv_template

    body = list(turns)
    if body[0].role == "system":
        # preprocess always renders the default Vicuna system prompt; give it this one instead.
        system = body.pop(0).content

        def vicuna_with_system(_model_path):
            conv = get_conv_template("vicuna_v1.1")
            conv.set_system_message(system)
            return conv

        monkeypatch.setattr(fastchat_train, "get_conversation_template", vicuna_with_system)
    source = [{"from": "human" if t.role == "user" else "gpt", "value": t.content.strip()} for t in body]
    out = fastchat_train.preprocess([source], tokenizer)
    n = int(out["attention_mask"][0].sum())
    assert n < tokenizer.model_max_length  # nothing truncated
    assert set(out["labels"][0][n:].tolist()) <= {IGNORE_INDEX}
    return out["input_ids"][0][:n].tolist(), out["labels"][0][:n].tolist()


def _ours(tokenizer, name: str, turns: list[Turn], honour_loss_flag: bool = False):
    return tokenize_conversation(tokenizer, get_template(name), Conversation("c", turns), honour_loss_flag)


def _trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of trained labels."""
    runs, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_vicuna_masks_are_fastchat_trainers(name, fastchat_tokenizer, our_tokenizer, monkeypatch):
    turns = CONVERSATIONS[name]
    ids, labels = _fastchat_vicuna(fastchat_tokenizer, turns, monkeypatch)
    ours = _ours(our_tokenizer, "vicuna_v1.1", turns)
    assert ours.input_ids == ids
    assert ours.labels == labels
    # FastChat trained one run per reply (it masks everything when its counts go wrong).
    assert len(_trained_runs(labels)) == sum(t.role == "assistant" for t in turns)


def test_a_reply_starting_with_a_digit_learns_its_lone_space_token(
    fastchat_tokenizer, our_tokenizer, monkeypatch
):
    # "ASSISTANT: 42" is "▁ASSISTANT", ":", "▁", "4", "2": serving prompts end at "ASSISTANT:", so
    # the model must learn to write "▁"; FastChat's "- 2" trains it, and so do we.
    turns = CONVERSATIONS["one-round"]
    ids, labels = _fastchat_vicuna(fastchat_tokenizer, turns, monkeypatch)
    ours = _ours(our_tokenizer, "vicuna_v1.1", turns)
    learnt = [t for t in ours.labels if t != IGNORE_INDEX]
    assert our_tokenizer.convert_ids_to_tokens(learnt) == ["▁", "4", "2", "</s>"]
    assert ours.labels == labels


def test_honouring_the_loss_flag_masks_exactly_the_flagged_replies(
    fastchat_tokenizer, our_tokenizer, monkeypatch
):
    turns = CONVERSATIONS["agentinstruct-db"]
    _, labels = _fastchat_vicuna(fastchat_tokenizer, turns, monkeypatch)
    replies = [t for t in turns if t.role == "assistant"]
    for (start, end), reply in zip(_trained_runs(labels), replies, strict=True):
        if reply.loss is False:
            labels[start:end] = [IGNORE_INDEX] * (end - start)
    ours = _ours(our_tokenizer, "vicuna_v1.1", turns, honour_loss_flag=True)
    assert ours.labels == labels
    assert our_tokenizer.decode([t for t in labels if t != IGNORE_INDEX]).count("Ok.") == 0


def test_fastchat_discards_a_conversation_that_ends_on_a_user_turn(
    fastchat_tokenizer, our_tokenizer, monkeypatch
):
    """Documented difference: FastChat masks all of it (its "tokenization mismatch"); we train the replies."""
    answered = CONVERSATIONS["multi-turn-chat"]
    turns = [*answered, Turn("user", "Thanks!")]
    ids, labels = _fastchat_vicuna(fastchat_tokenizer, turns, monkeypatch)
    assert set(labels) == {IGNORE_INDEX}

    answered_ids, answered_labels = _fastchat_vicuna(fastchat_tokenizer, answered, monkeypatch)
    ours = _ours(our_tokenizer, "vicuna_v1.1", turns)
    assert ours.input_ids == ids
    assert ours.labels == answered_labels + [IGNORE_INDEX] * (len(ids) - len(answered_ids))


def _fastchat_llama2(tokenizer, turns: list[Turn]) -> tuple[list[int], list[int]]:
    """FastChat's llama-2 rendering, each reply and its closing </s> trained, spans counted in tokens."""
    from fastchat.conversation import get_conv_template

    conv = get_conv_template("llama-2")
    body = list(turns)
    conv.set_system_message(body.pop(0).content if body[0].role == "system" else AGENTLM_SYSTEM_PROMPT)
    spans = []
    for turn in body:
        if turn.role == "user":
            conv.append_message(conv.roles[0], turn.content.strip())
            continue
        conv.append_message(conv.roles[1], None)
        before = tokenizer(conv.get_prompt()).input_ids  # "... [/INST]"
        conv.update_last_message(turn.content.strip())
        after = tokenizer(conv.get_prompt()).input_ids[:-1]  # "... [/INST] reply </s>", not the "<s>"
        spans.append((before, after))
    ids = tokenizer(conv.get_prompt()).input_ids
    labels = [IGNORE_INDEX] * len(ids)
    for before, after in spans:
        assert ids[: len(after)] == after and after[: len(before)] == before  # counts are token boundaries
        labels[len(before) : len(after)] = ids[len(before) : len(after)]
    return ids, labels


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_llama2_masks_follow_fastchats_llama2_rendering(name, fastchat_tokenizer, our_tokenizer):
    from fastchat.train.train import preprocess

    # FastChat 0.2.31's trainer is Vicuna-only; if that changes, compare with it as above instead.
    assert 'get_conversation_template("vicuna")' in inspect.getsource(preprocess)
    turns = CONVERSATIONS[name]
    ids, labels = _fastchat_llama2(fastchat_tokenizer, turns)
    ours = _ours(our_tokenizer, "llama-2", turns)
    assert ours.input_ids == ids
    assert ours.labels == labels
    learnt = our_tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert learnt.count("</s>") == sum(t.role == "assistant" for t in turns)
    assert "<s>" not in learnt and "INST" not in learnt

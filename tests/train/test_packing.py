"""Packing with exact boundaries: the same logits and loss as each conversation alone or padded."""

from __future__ import annotations

import random

import pytest
import torch
from tiny import build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentlm.data.formats import Conversation, Turn
from agentlm.data.masks import tokenize_conversation
from agentlm.data.templates import get_template
from agentlm.train.loss import causal_lm_loss
from agentlm.train.packing import epoch_rows, pack_rows, packed_batch, padded_batch


def test_first_fit_decreasing_fills_rows_and_refuses_what_cannot_fit():
    lengths = [5, 3, 8, 2, 6]
    rows = pack_rows(lengths, capacity=10)
    assert rows == [[2, 3], [4, 1], [0]]  # longest first, each into the first row with room
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4] and len(rows) == 3
    with pytest.raises(ValueError, match="does not fit rows of 10"):
        pack_rows([11], 10)


@pytest.fixture(scope="module")
def model_and_examples(tmp_path_factory):
    texts = [f"Question {i}: what is {i} plus {i}? Answer: {2 * i}." for i in range(20)]
    path = build_tiny_model(tmp_path_factory.mktemp("pack") / "m", texts * 3, vocab_size=400)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    template = get_template("llama-2")
    convs = [
        Conversation(
            f"c{i}",
            [
                Turn("user", f"Question {i}: what is {i} plus {i}?" * (1 + i % 3)),
                Turn("assistant", f"{2 * i}."),
            ],
        )
        for i in range(6)
    ]
    return model, tokenizer, [tokenize_conversation(tokenizer, template, c) for c in convs]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_each_conversation_gets_the_logits_it_gets_alone(model_and_examples, attention):
    model, tokenizer, examples = model_and_examples
    model.config._attn_implementation = attention
    batch = packed_batch(examples, tokenizer.pad_token_id, capacity=200)
    assert batch.input_ids.shape[0] < len(examples)  # several conversations share a row
    with torch.no_grad():
        assert "attention_mask" not in batch.model_inputs()  # restarted positions mark the boundaries
        packed = model(**batch.model_inputs()).logits
        rows = pack_rows([len(e.input_ids) for e in examples], 200)
        for r, members in enumerate(rows):
            at = 0
            for i in members:
                n = len(examples[i].input_ids)
                alone = model(torch.tensor([examples[i].input_ids])).logits[0]
                assert torch.allclose(packed[r, at : at + n], alone, atol=1e-5), (attention, i)
                at += n


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_gemma3_sliding_window_layers_keep_their_window_inside_each_packed_conversation(attention):
    """Conversations longer than the window: the packed sliding layers must still see only the window."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=6, layer_types=["sliding_attention", "full_attention"],
        attn_implementation=attention,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config).eval()
    lengths = [20, 13, 9, 25]
    examples = [
        type("Ex", (), {"input_ids": torch.randint(2, 64, (n,)).tolist(), "labels": [-100] * n})()
        for n in lengths
    ]
    batch = packed_batch(examples, 0, capacity=40)
    with torch.no_grad():
        packed = model(**batch.model_inputs()).logits
        for r, members in enumerate(pack_rows(lengths, 40)):
            at = 0
            for i in members:
                alone = model(torch.tensor([examples[i].input_ids])).logits[0]
                assert torch.allclose(packed[r, at : at + lengths[i]], alone, atol=1e-5), (attention, i)
                at += lengths[i]
        # The window matters here: the same weights with a window wider than the conversations
        # (what one block-diagonal mask for every layer amounted to) give other logits.
        wide = Gemma3ForCausalLM(Gemma3TextConfig(**{**config.to_dict(), "sliding_window": 64})).eval()
        wide.load_state_dict(model.state_dict())
        ids = torch.tensor([examples[0].input_ids])
        assert not torch.allclose(wide(ids).logits, model(ids).logits, atol=1e-3)


def test_packed_and_padded_batches_have_the_same_loss_with_less_padding(model_and_examples):
    model, tokenizer, examples = model_and_examples
    model.config._attn_implementation = "sdpa"
    packed = packed_batch(examples, tokenizer.pad_token_id, capacity=200)
    padded = padded_batch(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        n = sum((b.labels[:, 1:] != -100).sum() for b in [padded])
        loss_padded = model(**padded.model_inputs(), labels=padded.labels, num_items_in_batch=n).loss
        loss_packed = model(**packed.model_inputs(), labels=packed.labels, num_items_in_batch=n).loss
        # The recipe's loss projects only the trained positions onto the vocabulary: same value.
        ours_padded, ours_packed = (causal_lm_loss(model, b, n) for b in (padded, packed))
    assert loss_packed.item() == pytest.approx(loss_padded.item(), rel=1e-5)
    assert ours_padded.item() == pytest.approx(loss_padded.item(), rel=1e-5)
    assert ours_packed.item() == pytest.approx(loss_packed.item(), rel=1e-5)
    assert packed.real_tokens == padded.real_tokens
    assert packed.padding_share < padded.padding_share


def test_an_epochs_rows_cover_every_conversation_once_in_no_length_order():
    """Rows are filled longest first; the epoch must not then run from long to short conversations."""
    lengths = [1000] * 50 + [100] * 150  # agent trajectories (a row each) and short chats (10 a row)
    random.Random(0).shuffle(lengths)
    rows = epoch_rows(lengths, 1024, random.Random(0))
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 1024 for row in rows)
    short_rows = [at for at, row in enumerate(rows) if max(lengths[i] for i in row) == 100]
    assert len(short_rows) == 15
    # Unshuffled, the 15 rows of short chats would all come last (mean position 0.88 of the epoch).
    assert 0.25 < sum(short_rows) / len(short_rows) / len(rows) < 0.75

"""Shared prefixes (train/prefix.py): grouping, and logits equal to the full forward's."""

from __future__ import annotations

import torch
from tiny import build_tiny_gemma

from agentlm.data.masks import IGNORE_INDEX, TokenizedExample
from agentlm.train.prefix import MIN_PREFIX, PrefixedBatch, group_by_prefix, prefixed_hidden, suffix_batch


def _example(opening: list[int], task: list[int], reply: list[int]) -> TokenizedExample:
    ids = [*opening, *task, *reply]
    labels = [IGNORE_INDEX] * (len(opening) + len(task)) + reply
    return TokenizedExample(ids, labels)


def test_examples_with_one_opening_are_grouped_up_to_their_first_trained_token() -> None:
    opening = [7] * (MIN_PREFIX + 40)
    same = [_example(opening, [10 + i, 11], [20 + i, 21, 22]) for i in range(5)]
    # Shares the opening but its trained reply starts right after it: the prefix must stop before.
    early = _example(opening, [], [30, 31])
    other = [_example([8] * (MIN_PREFIX + 40), [12], [40]) for _ in range(2)]  # too few to share
    short = _example([7] * 10, [1], [2])
    groups, rest = group_by_prefix([*same, early, *other, short])
    assert len(groups) == 1
    assert groups[0].members == [0, 1, 2, 3, 4, 5]
    assert groups[0].prefix == opening[:-1]  # one token before `early`'s first trained token
    assert rest == [6, 7, 8]


def test_suffixes_on_a_cached_prefix_get_the_full_forwards_logits_past_the_sliding_window() -> None:
    model = build_tiny_gemma()  # sliding window of 4 tokens, one sliding and one full layer
    torch.manual_seed(1)
    prefix = torch.randint(3, 120, (12,)).tolist()  # three windows long
    examples = [
        TokenizedExample(prefix + s, [IGNORE_INDEX] * (len(prefix) + 1) + s[1:])
        for s in (torch.randint(3, 120, (n,)).tolist() for n in (5, 9, 3))
    ]
    item = PrefixedBatch(torch.tensor([prefix]), suffix_batch(examples, len(prefix), pad_id=0))
    with torch.no_grad():
        shared = model.lm_head(prefixed_hidden(model.model, item))
        for row, ex in enumerate(examples):
            full = model(torch.tensor([ex.input_ids])).logits[0, len(prefix) :]
            assert torch.allclose(shared[row, : len(full)], full, atol=1e-5), row

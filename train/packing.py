"""Micro batches, padded or packed with exact boundaries.

Padded: one conversation a row, right-padded to the longest in the batch. Packed: the same
conversations laid end to end in as few rows as fit ``capacity`` tokens (first-fit decreasing), so
almost no compute goes to padding. Packing is exact: position ids restart at 0 for every
conversation, and a block-diagonal causal mask (4-D, additive) keeps attention from crossing
between them, so each conversation's logits are the ones it would get alone. Loss cannot cross
either: a conversation's first token (its BOS) is never a target.

With packing, a micro batch is ``batch_size`` ROWS of up to ``max_seq_len`` tokens, filled from the
shuffled epoch (``packed_rows_stream``); padded, it is ``batch_size`` conversations. The loss is
summed over target tokens and divided by their count either way, so the same conversations in a
step give the same loss whichever layout holds them; packing only removes wasted compute.

Gemma 3's sliding-window layers see the full block-diagonal mask too: the same result as long as
conversations are no longer than the window (512 tokens for the 270M model).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from agentlm.data.masks import IGNORE_INDEX


@dataclass
class Batch:
    input_ids: Any  # (rows, width) long
    labels: Any  # (rows, width) long, IGNORE_INDEX where there is nothing to learn
    attention_mask: Any  # padded: (rows, width) 0/1; packed: (rows, 1, width, width) additive float
    position_ids: Any | None  # packed only: (rows, width), restarting per conversation
    real_tokens: int  # tokens that belong to a conversation (the rest is padding)

    @property
    def padding_share(self) -> float:
        total = self.input_ids.numel()
        return 1 - self.real_tokens / total if total else 0.0

    def model_inputs(self) -> dict[str, Any]:
        """The model's inputs, without the labels (the recipe computes the loss itself)."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
        return inputs

    def to(self, device: Any) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(
            move(self.input_ids),
            move(self.labels),
            move(self.attention_mask),
            move(self.position_ids),
            self.real_tokens,
        )


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `capacity` tokens (first-fit decreasing)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > capacity:
            raise ValueError(f"a conversation of {lengths[i]} tokens does not fit rows of {capacity}")
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def packed_rows_stream(lengths: list[int], capacity: int, window: int = 256) -> list[list[int]]:
    """Rows for a whole epoch: first-fit decreasing over consecutive windows of the (shuffled) order.

    A window of a few hundred conversations leaves rows nearly full (a few percent padding) while
    keeping the shuffle's randomness at the scale of the epoch.
    """
    rows: list[list[int]] = []
    for start in range(0, len(lengths), window):
        chunk = lengths[start : start + window]
        rows += [[start + i for i in row] for row in pack_rows(chunk, capacity)]
    return rows


def padded_batch(examples: list[Any], pad_id: int) -> Batch:
    """One conversation a row, right-padded."""
    import torch

    width = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return Batch(ids, labels, mask, None, sum(len(ex.input_ids) for ex in examples))


def packed_batch(examples: list[Any], pad_id: int, capacity: int, dtype: Any = None) -> Batch:
    """The conversations end to end in rows of at most `capacity` tokens, boundaries kept exact."""
    import torch

    dtype = dtype or torch.float32
    rows = pack_rows([len(ex.input_ids) for ex in examples], capacity)
    width = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # which conversation; -1 padding
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            n = len(examples[i].input_ids)
            ids[r, at : at + n] = torch.tensor(examples[i].input_ids)
            labels[r, at : at + n] = torch.tensor(examples[i].labels)
            positions[r, at : at + n] = torch.arange(n)
            segment[r, at : at + n] = k
            at += n
    causal = torch.tril(torch.ones((width, width), dtype=torch.bool))
    allowed = (segment[:, :, None] == segment[:, None, :]) & causal & (segment[:, :, None] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no empty softmax rows
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return Batch(ids, labels, mask[:, None], positions, sum(len(ex.input_ids) for ex in examples))


def epoch_rows(lengths: list[int], capacity: int, rng: random.Random) -> list[list[int]]:
    """An epoch's rows (indices of ``lengths``, in their shuffled order), the rows themselves shuffled.

    ``packed_rows_stream`` fills rows longest first; without the shuffle an epoch would run from
    long conversations to short ones, which in a mix means from agent trajectories to general chat.
    """
    rows = packed_rows_stream(lengths, capacity)
    rng.shuffle(rows)
    return rows

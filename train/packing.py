"""Micro batches, padded or packed with exact boundaries.

Padded: one conversation a row, right-padded to the longest in the batch. Packed: the same
conversations laid end to end in as few rows as fit ``capacity`` tokens (first-fit decreasing), so
almost no compute goes to padding. Packing is exact: position ids restart at 0 for every
conversation and no attention mask is passed, which is how transformers recognises packed rows:
its attention then keeps to each conversation. With sdpa or eager attention (the CPU) it builds a
block-diagonal causal mask per layer type, so Gemma 3's sliding-window layers keep their window
inside each conversation; with FlashAttention 2 (``attn_implementation: flash_attention_2`` on a
GPU) it takes the variable-length kernel, with no mask at all. Each conversation's logits are the
ones it would get alone. Loss cannot cross either: a conversation's first token (its BOS) is never
a target.

With packing, a micro batch is ``batch_size`` ROWS of up to ``max_seq_len`` tokens, filled from the
shuffled epoch (``packed_rows_stream``); padded, it is ``batch_size`` conversations. The loss is
summed over target tokens and divided by their count either way, so the same conversations in a
step give the same loss whichever layout holds them; packing only removes wasted compute.
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
    attention_mask: Any | None  # padded: (rows, width) 0/1; packed: None (positions say where rows split)
    position_ids: Any | None  # packed only: (rows, width), restarting per conversation
    real_tokens: int  # tokens that belong to a conversation (the rest is padding)

    @property
    def padding_share(self) -> float:
        total = self.input_ids.numel()
        return 1 - self.real_tokens / total if total else 0.0

    def model_inputs(self) -> dict[str, Any]:
        """The model's inputs, without the labels (the recipe computes the loss itself)."""
        inputs = {"input_ids": self.input_ids}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            # transformers reads restarted positions as packing only when no KV cache is built.
            inputs |= {"position_ids": self.position_ids, "use_cache": False}
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


def packed_batch(examples: list[Any], pad_id: int, capacity: int) -> Batch:
    """The conversations end to end in rows of at most `capacity` tokens, boundaries kept exact."""
    import torch

    rows = pack_rows([len(ex.input_ids) for ex in examples], capacity)
    width = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    # Padding keeps position 0: each padding token is a sequence of its own, attending to itself.
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(examples[i].input_ids)
            ids[r, at : at + n] = torch.tensor(examples[i].input_ids)
            labels[r, at : at + n] = torch.tensor(examples[i].labels)
            positions[r, at : at + n] = torch.arange(n)
            at += n
    return Batch(ids, labels, None, positions, sum(len(ex.input_ids) for ex in examples))


def epoch_rows(lengths: list[int], capacity: int, rng: random.Random) -> list[list[int]]:
    """An epoch's rows (indices of ``lengths``, in their shuffled order), the rows themselves shuffled.

    ``packed_rows_stream`` fills rows longest first; without the shuffle an epoch would run from
    long conversations to short ones, which in a mix means from agent trajectories to general chat.
    """
    rows = packed_rows_stream(lengths, capacity)
    rng.shuffle(rows)
    return rows

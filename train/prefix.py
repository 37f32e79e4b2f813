"""Shared prefixes: conversations that open the same way train against one computed opening.

Every assistant trajectory opens with its profile's instruction, the database schema, "Ok." and
the 1-shot example: about 760 Gemma tokens, none of them trained, the same in every example of
that profile. Recomputing them for each conversation is most of the compute of an agent step on
the CPU. With ``share_prefixes``, examples whose first ``MIN_PREFIX`` tokens agree are grouped; a
micro batch holds ``batch_size`` conversations of one group, the group's longest common prefix is
run once without gradients (with the current weights, so its keys and values are what serving
computes), and the conversations' remaining tokens are run on top of that KV cache, right-padded.

The logits are the ones each conversation gets alone (a test checks it against the full forward,
on a model with sliding-window layers). What changes is the gradient: it no longer flows into the
prefix's own activations, which is a truncation of the same kind as truncated backpropagation
through time. The prefix holds no trained token, so only the adapters' (or weights') effect on the
prefix's keys and values goes untrained; their effect on everything the model writes is trained.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from agentlm.data.masks import IGNORE_INDEX
from agentlm.train.packing import Batch

MIN_PREFIX = 256  # tokens two conversations must share to be grouped (and the least worth sharing)
MIN_GROUP = 4  # fewer conversations than this with one opening train the ordinary way


@dataclass
class PrefixGroup:
    prefix: list[int]  # the shared opening's token ids; never reaches a trained token
    members: list[int]  # indices of the examples that open with it


def _first_target(labels: list[int]) -> int:
    return next((i for i, v in enumerate(labels) if v != IGNORE_INDEX), len(labels))


def group_by_prefix(examples: list[Any]) -> tuple[list[PrefixGroup], list[int]]:
    """Groups of examples with a common opening of at least MIN_PREFIX tokens, and the rest.

    The shared prefix stops one token before any member's first trained token: that token is
    predicted from the position before it, which must be computed with gradients.
    """
    by_head: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if len(ex.input_ids) > MIN_PREFIX:
            by_head[tuple(ex.input_ids[:MIN_PREFIX])].append(i)
    grouped = set()
    groups = []
    for members in by_head.values():
        if len(members) < MIN_GROUP:
            continue
        ref = examples[members[0]].input_ids
        length = min(_first_target(examples[i].labels) - 1 for i in members)
        for i in members[1:]:
            ids = examples[i].input_ids
            n = 0
            while n < length and ids[n] == ref[n]:
                n += 1
            length = n
        if length >= MIN_PREFIX:
            groups.append(PrefixGroup(ref[:length], members))
            grouped.update(members)
    return groups, [i for i in range(len(examples)) if i not in grouped]


def suffix_batch(examples: list[Any], start: int, pad_id: int) -> Batch:
    """The conversations from token `start` on, right-padded (their common prefix is cached)."""
    import torch

    width = max(len(ex.input_ids) - start for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids) - start
        ids[row, :n] = torch.tensor(ex.input_ids[start:])
        labels[row, :n] = torch.tensor(ex.labels[start:])
        mask[row, :n] = 1
    return Batch(ids, labels, mask, None, sum(len(ex.input_ids) - start for ex in examples))


@dataclass
class PrefixedBatch:
    """A micro batch of one group: the shared prefix (1, P) and the suffixes (B, S)."""

    prefix_ids: Any
    batch: Batch

    @property
    def labels(self) -> Any:
        return self.batch.labels

    def to(self, device: Any) -> PrefixedBatch:
        return PrefixedBatch(self.prefix_ids.to(device), self.batch.to(device))


def prefixed_hidden(decoder: Any, item: PrefixedBatch) -> Any:
    """The suffixes' last hidden states (rows, width, dim), attending to the prefix's cached keys
    and values; `decoder` is the transformer body (no output layer)."""
    import torch

    with torch.no_grad():
        cache = decoder(input_ids=item.prefix_ids, use_cache=True).past_key_values
    rows, width = item.batch.input_ids.shape
    start = item.prefix_ids.shape[1]
    cache.batch_repeat_interleave(rows)
    mask = torch.cat([item.batch.attention_mask.new_ones(rows, start), item.batch.attention_mask], dim=1)
    positions = torch.arange(start, start + width, device=mask.device).expand(rows, width)
    return decoder(
        input_ids=item.batch.input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state

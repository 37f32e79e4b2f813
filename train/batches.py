"""The recipe's micro batches: each rank's endless, seeded stream over the tokenized examples.

An epoch is the examples shuffled with the run's seed and dealt out to the ranks; each rank
batches its share padded (``batch_size`` conversations), packed (``batch_size`` rows of up to
``max_seq_len`` tokens, train/packing.py) or by shared prefix (train/prefix.py). The order is a
function of the seed alone, so a resumed run skips the micro batches it has seen and goes on
with the ones an uninterrupted run would have trained on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentlm.data.masks import TokenizedExample
from agentlm.train.packing import epoch_rows, packed_batch, packed_rows_stream, padded_batch
from agentlm.train.prefix import PrefixedBatch, group_by_prefix, suffix_batch

if TYPE_CHECKING:
    from agentlm.train.sft import SFTConfig

log = logging.getLogger(__name__)


def units_per_epoch(examples: list[TokenizedExample], cfg: SFTConfig, world_size: int) -> int:
    """What batch_size counts in one epoch on all ranks: conversations, or packed rows."""
    if not cfg.pack or cfg.share_prefixes:
        return len(examples)
    order = list(range(len(examples)))
    random.Random(cfg.seed).shuffle(order)  # about as micro_batch_stream lays out an epoch
    rows = 0
    for rank in range(world_size):
        mine = order[rank::world_size]
        rows += len(packed_rows_stream([len(examples[j].input_ids) for j in mine], cfg.max_seq_len))
    return rows


def micro_batch_stream(
    examples: list[TokenizedExample], cfg: SFTConfig, rank: int, world_size: int, pad: int, device: Any
) -> Iterator[Any]:
    """Endless shuffled micro batches for this rank: padded, or packed with exact boundaries."""
    rng = random.Random(cfg.seed)
    if cfg.share_prefixes:
        yield from _prefix_batches(examples, cfg, rank, world_size, pad, device, rng)  # endless
        return
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        order = order[rank::world_size]
        if cfg.pack:  # batch_size rows of up to max_seq_len tokens, filled from the epoch
            rows = epoch_rows([len(examples[j].input_ids) for j in order], cfg.max_seq_len, rng)
            groups = [[order[i] for i in row] for row in rows]
        else:  # batch_size conversations
            groups = [[j] for j in order]
        for i in range(0, len(groups) - cfg.batch_size + 1 or 1, cfg.batch_size):
            batch = [examples[j] for group in groups[i : i + cfg.batch_size] for j in group]
            if cfg.pack:
                yield packed_batch(batch, pad, cfg.max_seq_len).to(device)
            else:
                yield padded_batch(batch, pad).to(device)


def _prefix_batches(
    examples: list[TokenizedExample],
    cfg: SFTConfig,
    rank: int,
    world_size: int,
    pad: int,
    device: Any,
    rng: random.Random,
) -> Iterator[Any]:
    """Endless shuffled micro batches: batch_size conversations of one shared-prefix group each,
    the conversations that share no opening padded batch_size at a time."""
    import torch

    groups, rest = group_by_prefix(examples)
    log.info(
        "shared prefixes: %d groups (%s tokens) hold %d of %d conversations",
        len(groups), ", ".join(str(len(g.prefix)) for g in groups),
        sum(len(g.members) for g in groups), len(examples),
    )  # fmt: skip
    while True:
        items = []
        for g in groups:
            mine = g.members[rank::world_size]
            rng.shuffle(mine)
            prefix = torch.tensor([g.prefix])
            for i in range(0, len(mine), cfg.batch_size):
                chunk = [examples[j] for j in mine[i : i + cfg.batch_size]]
                items.append(lambda p=prefix, c=chunk: PrefixedBatch(p, suffix_batch(c, p.shape[1], pad)))
        mine = rest[rank::world_size]
        rng.shuffle(mine)
        for i in range(0, len(mine), cfg.batch_size):
            chunk = [examples[j] for j in mine[i : i + cfg.batch_size]]
            items.append(lambda c=chunk: padded_batch(c, pad))
        rng.shuffle(items)
        for make in items:
            yield make().to(device)

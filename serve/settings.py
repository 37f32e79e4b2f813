"""Server settings: one object, from defaults, `AGENTLM_*` environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentlm.paths import home


def _default_store() -> Path:
    return home() / "trajectories.sqlite3"


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTLM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # "embedded" (the shipped AgentLM tune of Gemma 3 270M), "embedded-base" (its untuned base), a local
    # checkpoint directory, a .gguf file, or a Hugging Face hub id (in the local cache);
    # with engine="remote", the model id the remote endpoint serves ("embedded": ask it).
    model: str = "embedded"
    engine: Literal["embedded", "remote", "vllm"] = "embedded"
    remote_url: str | None = None
    remote_api_key: str | None = None
    served_model_name: str | None = None  # the id clients use; default derived from `model`
    api_key: str | None = None  # None: no authentication
    store: Path = Field(default_factory=_default_store)
    profiles: list[str] = ["hr-assistant", "scheduling-assistant"]
    num_threads: int | None = Field(default=None, ge=1)  # llama.cpp threads; None: the CPUs we may use
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # vLLM's --dtype; "auto": the checkpoint's own

    # --- the embedded engine -------------------------------------------------------------------
    max_batch_size: int = Field(default=8, ge=1, le=256)  # sequences decoded together
    max_queue: int = Field(default=64, ge=1)  # waiting requests beyond this get 429
    # KV cache cells (tokens) shared by the running sequences and the cached prompt prefixes; a
    # request's context is at most this (and the model's own). Gemma 3 270M: 18 KB a cell.
    context_tokens: int = Field(default=8192, ge=256)
    # Prompt lookup: a greedy reply decoded alone guesses up to this many next tokens a step from
    # its own context (a copied name or value) and keeps those the model confirms; 0: off. The
    # guesses are trimmed to a step size worth its cost on this machine (engines/lookup.py).
    prompt_lookup: int = Field(default=7, ge=0, le=16)

    # --- the vLLM engine (a `vllm serve` child process; GPU machines, the [gpu] extra) ----------
    vllm_executable: str = "vllm"  # or a path; the child is `<vllm_executable> serve <model> ...`
    vllm_port: int | None = Field(default=None, ge=0, le=65535)  # None: a free port on 127.0.0.1
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=1)
    lora_adapters: dict[str, str] = Field(default_factory=dict)  # name -> adapter directory
    vllm_extra_args: list[str] = Field(default_factory=list)  # passed through as they are
    vllm_start_timeout: float = Field(default=900.0, gt=0)  # seconds to wait for its /health

    # --- the HTTP layer --------------------------------------------------------------------------
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # larger request bodies get 413
    cors_origins: list[str] = Field(default_factory=list)  # e.g. ["https://app.example.com"]; [] = off

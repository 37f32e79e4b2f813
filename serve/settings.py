"""Server settings: one object, from defaults, `AGENTLM_*` environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentlm.paths import home, promotion_history


def _default_store() -> str:
    return str(home() / "trajectories.sqlite3")


class ServeSettings(BaseSettings):
    """Everything `agentlm serve` can be told. Each field is also an `AGENTLM_<NAME>` environment
    variable, and the command-line options of `agentlm serve` are made from these fields
    (``agentlm/options.py``): the description is the option's help."""

    model_config = SettingsConfigDict(env_prefix="AGENTLM_", extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    model: str = Field(
        default="embedded",
        description="'embedded' (the shipped AgentLM tune of Gemma 3 270M), 'embedded-base' (its "
        "untuned base), a local checkpoint directory, a .gguf file, or a Hugging Face hub id in the "
        "local cache; with --engine remote, the id the remote endpoint serves ('embedded': ask it).",
    )
    engine: Literal["embedded", "remote", "vllm"] = Field(
        default="embedded",
        description="'embedded' (in-process llama.cpp), 'remote' (an OpenAI URL) or 'vllm' (GPU).",
    )
    remote_url: str | None = Field(default=None, description="OpenAI-compatible URL for --engine remote.")
    remote_api_key: str | None = Field(default=None, description="Key for the remote endpoint.")
    served_model_name: str | None = Field(
        default=None, description="Model id clients use (default: derived from --model)."
    )
    api_key: str | None = Field(default=None, description="Require this bearer key from clients.")
    store: str = Field(
        default_factory=_default_store,
        validation_alias=AliasChoices("AGENTLM_STORE_URL", "AGENTLM_STORE"),
        description="Trajectory store: a SQLite file (default: $AGENTLM_HOME/trajectories.sqlite3) or a "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL, shared by several replicas (AGENTLM_STORE_URL).",
    )

    @field_validator("store", mode="before")
    @classmethod
    def _store_path(cls, store: object) -> object:
        return str(store) if isinstance(store, Path) else store

    @field_validator("api_key")
    @classmethod
    def _no_empty_key(cls, key: str | None) -> str | None:
        return key or None  # AGENTLM_API_KEY= (as compose passes an unset variable): no key

    promotions: Path = Field(
        default_factory=promotion_history,
        description="Promotion history (JSONL) that train/promote.py appends to; GET /v1/promotions reads it.",
    )
    profiles: list[str] = Field(
        default=["hr-assistant", "scheduling-assistant"], description="Agent profiles to serve."
    )
    num_threads: int | None = Field(
        default=None, ge=1, description="Embedded: llama.cpp threads (default: the CPUs we may use)."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="vLLM: its --dtype; 'auto' is the checkpoint's own."
    )

    # --- the embedded engine -------------------------------------------------------------------
    max_batch_size: int = Field(default=8, ge=1, le=256, description="Embedded: sequences decoded together.")
    max_queue: int = Field(default=64, ge=1, description="Waiting requests beyond this get 429.")
    context_tokens: int = Field(
        default=8192,
        ge=256,
        description="Embedded: KV cache cells shared by every sequence and cached prefix; a "
        "request's context is at most this (Gemma 3 270M: 18 KB a cell).",
    )
    prompt_lookup: int = Field(
        default=7,
        ge=0,
        le=16,
        description="Embedded: tokens a greedy reply guesses from its context a step (0: off); "
        "trimmed to a step size worth its cost on this machine (engines/lookup.py).",
    )

    # --- the vLLM engine (a `vllm serve` child process; GPU machines, the [gpu] extra) ----------
    vllm_executable: str = Field(default="vllm", description="vLLM: the `vllm` command or its path.")
    vllm_port: int | None = Field(
        default=None, ge=0, le=65535, description="vLLM: its port (default: a free one on 127.0.0.1)."
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="vLLM: GPUs to shard the model over.")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0.0, le=1.0, description="vLLM: share of GPU memory to use."
    )
    max_model_len: int | None = Field(default=None, ge=1, description="vLLM: context length to serve.")
    lora_adapters: dict[str, str] = Field(
        default_factory=dict, description="vLLM: LoRA adapters, name -> directory."
    )
    vllm_extra_args: list[str] = Field(default_factory=list, description="vLLM: more arguments, as they are.")
    vllm_start_timeout: float = Field(
        default=900.0, gt=0, description="vLLM: seconds to wait for its /health."
    )

    # --- the HTTP layer --------------------------------------------------------------------------
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser (none: CORS off)."
    )

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
    # "embedded" (Gemma 3 270M, bundled), a local checkpoint directory, or a Hugging Face hub id;
    # with engine="remote", the model id the remote endpoint serves ("embedded": ask it).
    model: str = "embedded"
    engine: Literal["embedded", "remote"] = "embedded"
    remote_url: str | None = None
    remote_api_key: str | None = None
    served_model_name: str | None = None  # the id clients use; default derived from `model`
    api_key: str | None = None  # None: no authentication
    store: Path = Field(default_factory=_default_store)
    profiles: list[str] = ["hr-assistant", "scheduling-assistant"]
    num_threads: int | None = Field(default=None, ge=1)  # torch threads; None: the CPUs we may use

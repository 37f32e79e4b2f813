"""Engines by name, imported only when chosen, so a CPU install never imports GPU-only code.

``create_engine(settings)`` builds the engine ``settings.engine`` names. Third-party engines can
``register_engine("name", "package.module:Class")``; the class needs a ``from_settings`` classmethod.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from agentlm.serve.engines.base import (
    Engine,
    EngineError,
    EngineOverloadedError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    InvalidToolSchemaError,
    ModelNotFoundError,
    PromptTooLongError,
    UnsupportedFeatureError,
)

if TYPE_CHECKING:
    from agentlm.serve.settings import ServeSettings

__all__ = [
    "Engine",
    "EngineError",
    "EngineOverloadedError",
    "FinishReason",
    "GenerationChunk",
    "GenerationRequest",
    "InvalidToolSchemaError",
    "ModelNotFoundError",
    "PromptTooLongError",
    "UnsupportedFeatureError",
    "available_engines",
    "create_engine",
    "register_engine",
]

_REGISTRY: dict[str, str] = {
    "embedded": "agentlm.serve.engines.embedded:EmbeddedEngine",
    "remote": "agentlm.serve.engines.remote:RemoteEngine",
    "vllm": "agentlm.serve.engines.vllm:VLLMEngine",
}


def register_engine(name: str, target: str) -> None:
    """Make an engine available by name; `target` is "module:Class", imported on first use."""
    _REGISTRY[name] = target


def available_engines() -> list[str]:
    return sorted(_REGISTRY)


def engine_class(name: str) -> type[Engine]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}: use one of {', '.join(available_engines())}") from None
    module, _, cls = target.partition(":")
    return getattr(import_module(module), cls)


def create_engine(settings: ServeSettings) -> Engine:
    """Build (and load) the engine the settings name; blocks until the model is ready."""
    return engine_class(settings.engine).from_settings(settings)  # type: ignore[attr-defined]

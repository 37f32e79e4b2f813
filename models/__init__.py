"""Models AgentLM ships: small deltas applied to a base model the product can get offline.

``agentlm-gemma-3-270m/`` is the default model: a LoRA adapter (PEFT format) on the embedded
Gemma 3 270M base, with its model card. ``serve/engines/embedded.py`` merges it into the base on
first use and caches the merged checkpoint.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped(name: str) -> Path:
    """The folder of a shipped model (its adapter files and model card)."""
    return Path(str(resources.files("agentlm.models") / name))

"""Where AgentLM keeps its files: the model cache, sample databases, the trajectory store."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """AGENTLM_HOME, or ~/.agentlm. Created on first use."""
    path = Path(os.environ.get("AGENTLM_HOME", Path.home() / ".agentlm")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def promotion_history() -> Path:
    """The promotion decisions, one JSON line each: train/promote.py appends, GET /v1/promotions reads."""
    return home() / "promotions.jsonl"

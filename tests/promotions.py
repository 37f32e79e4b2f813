"""Promotion decisions for tests: train/promote.py's entry point run on given eval rows."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from agentlm.train.eval import EvalRow
from agentlm.train.promote import main as promote_main


def promote(tmp_path: Path, history: Path, rows: list[EvalRow], *args: str) -> int:
    """Run the promotion entry point on eval rows, appending to `history`; its exit status
    (0 promote, KEEP keep)."""
    eval_json = tmp_path / f"eval-{len(list(tmp_path.glob('eval-*.json')))}.json"
    eval_json.write_text(json.dumps([asdict(r) for r in rows]))
    try:
        promote_main(["--eval", str(eval_json), "--history", str(history), *args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0

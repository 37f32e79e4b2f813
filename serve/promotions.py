"""The promotion history route: each decision train/promote.py made about a new checkpoint.

    GET /v1/promotions   newest first: {"object": "list", "data": [PromotionRecord, ...]}

train/promote.py appends one JSON line per decision to the history file (``ServeSettings.promotions``,
by default ``$AGENTLM_HOME/promotions.jsonl``); this route reads it on each request, so a training
run on the same machine shows up without a restart. A line that is not a promotion record (a torn
write, a hand edit) is skipped with a warning in the server log: one bad line never hides the rest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import ValidationError

from agentlm.serve.protocol import PromotionList, PromotionRecord

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/promotions")


def read_history(path: Path) -> list[PromotionRecord]:
    """The decisions in a history file, newest first; none when there is no file yet."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records: list[PromotionRecord] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(PromotionRecord.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as e:  # json.JSONDecodeError is a ValueError
            log.warning(
                "%s:%d: skipped, not a promotion record (%s)",
                path,
                number,
                (str(e).splitlines() or [type(e).__name__])[0],
            )
    # The file is in the order decisions were made; sorted, so a merged or copied file reads right.
    records.reverse()
    records.sort(key=lambda r: r.decided_at, reverse=True)
    return records


# A plain `def`: reading the file blocks, so FastAPI runs it in its thread pool.
@router.get("")
def promotions(request: Request) -> PromotionList:
    return PromotionList(data=read_history(request.app.state.settings.promotions))

"""Promotion: is a newly trained checkpoint not worse than the one in service?

``train/run.sh`` evaluates both with ``agentlm.train.eval --model PREVIOUS --model NEW --json
eval.json`` and asks this module. The new checkpoint is promoted when

- its mean agent-task success (over the task files both rows have) is at least the previous one's,
- its general multiple-choice accuracy fell by at most ``tolerance`` points (default 2), and
- its held-out chat perplexity rose by at most ``ppl_tolerance`` percent (default 2).

A metric missing from either row (``eval --no-general``, no task files) is not compared; when no
metric can be compared the new checkpoint is kept out, as nothing shows it is not worse. With no
previous checkpoint (one row, or no eval file) the new one is promoted.

Every decision is also appended, as one JSON line, to the promotion history (``--history``, by
default ``$AGENTLM_HOME/promotions.jsonl``): the record ``--out`` gets, with when it was decided
and the training stage that made the candidate. The API serves it (``GET /v1/promotions``) and the
UI's Models page draws it.

    python -m agentlm.train.promote --eval eval.json --out promotion.json   # exit 0: promote, 3: keep
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentlm.options import invoke, options_from, settings_of
from agentlm.paths import promotion_history
from agentlm.serve.protocol import PromotionRecord
from agentlm.train.eval import EvalRow

KEEP = 3  # the exit status that says "keep the previous checkpoint": a decision, not an error
EPS = 1e-9  # success rates and accuracies are ratios of small counts: compare them exactly


@dataclass
class Decision:
    promote: bool
    reason: str
    checks: list[str] = field(default_factory=list)  # one line per metric compared
    previous: EvalRow | None = None
    new: EvalRow | None = None


def not_worse(
    previous: EvalRow | None, new: EvalRow | None, tolerance: float = 2.0, ppl_tolerance: float = 2.0
) -> Decision:
    """Whether `new` may replace `previous`; tolerances in accuracy points and perplexity percent."""
    if previous is None:
        return Decision(True, "no previous checkpoint to compare with", new=new)
    if new is None:
        raise ValueError("a previous row needs a new row to compare with")
    checks, worse = [], []

    def check(name: str, old: float, now: float, ok: bool, fmt: str) -> None:
        checks.append(f"{name}: {old:{fmt}} -> {now:{fmt}} {'ok' if ok else 'worse'}")
        if not ok:
            worse.append(name)

    common = sorted(set(previous.tasks) & set(new.tasks))
    if common:
        old = sum(previous.tasks[t] for t in common) / len(common)
        now = sum(new.tasks[t] for t in common) / len(common)
        check(f"mean agent success ({', '.join(common)})", old, now, now >= old - EPS, ".1%")
    if previous.mc_accuracy is not None and new.mc_accuracy is not None:
        old, now = previous.mc_accuracy, new.mc_accuracy
        ok = now >= old - tolerance / 100 - EPS
        check(f"general MC (may fall {tolerance:g} points)", old, now, ok, ".1%")
    if previous.perplexity is not None and new.perplexity is not None:
        old, now = previous.perplexity, new.perplexity
        ok = now <= old * (1 + ppl_tolerance / 100) + EPS
        check(f"chat perplexity (may rise {ppl_tolerance:g} %)", old, now, ok, ".2f")
    if not checks:
        return Decision(False, "no metric in common to compare", checks, previous, new)
    reason = f"worse on {'; '.join(worse)}" if worse else "not worse on any metric compared"
    return Decision(not worse, reason, checks, previous, new)


def decide(eval_json: Path | None, tolerance: float = 2.0, ppl_tolerance: float = 2.0) -> Decision:
    """The decision for eval.json's rows: [previous, new], or [new] alone (no previous checkpoint)."""
    rows = [EvalRow(**r) for r in json.loads(eval_json.read_text())] if eval_json else []
    if len(rows) > 2:
        raise ValueError(f"{eval_json}: {len(rows)} rows; expected [previous, new] or [new]")
    previous, new = (rows[0], rows[1]) if len(rows) == 2 else (None, rows[0] if rows else None)
    return not_worse(previous, new, tolerance, ppl_tolerance)


class PromoteSettings(BaseModel):
    """`python -m agentlm.train.promote`: the eval rows, the tolerances, and what the decision records."""

    model_config = ConfigDict(extra="forbid")

    eval: Path | None = Field(
        default=None,
        description="eval.json: the rows of the previous and the new checkpoint, or of the new one alone "
        "(none given: no previous checkpoint).",
    )
    tolerance: float = Field(default=2.0, description="MC accuracy points the new may lose.")
    ppl_tolerance: float = Field(default=2.0, description="Perplexity percent it may gain.")
    out: Path | None = Field(default=None, description="Write the decision as JSON here.")
    checkpoint: str | None = Field(default=None, description="The new checkpoint (recorded in --out).")
    link: str | None = Field(default=None, description="The link promotion repoints (recorded in --out).")
    stage: Literal["sft", "preference"] = Field(
        default="sft", description="The training that made the new checkpoint (recorded)."
    )
    history: Path = Field(
        default_factory=promotion_history,
        description="Append the decision to this JSONL history, which GET /v1/promotions serves "
        "(default: $AGENTLM_HOME/promotions.jsonl).",
    )


@options_from(PromoteSettings, list(PromoteSettings.model_fields))
def run(**options: Any) -> None:
    """Promotion: is a newly trained checkpoint not worse than the one in service? Exits 0 to promote,
    3 to keep the previous one."""
    settings = settings_of(PromoteSettings, options, "python -m agentlm.train.promote")
    decision = decide(settings.eval, settings.tolerance, settings.ppl_tolerance)
    for line in decision.checks:
        print(f"  {line}")
    print(f"{'promote' if decision.promote else 'keep the previous checkpoint'}: {decision.reason}")
    record = {**asdict(decision), "checkpoint": settings.checkpoint, "link": settings.link}
    if record["checkpoint"] is None and decision.new is not None:
        record["checkpoint"] = decision.new.model  # the candidate, as eval named it
    record |= {"tolerance": settings.tolerance, "ppl_tolerance": settings.ppl_tolerance}
    record |= {"decided_at": time.time(), "stage": settings.stage}
    if settings.out:
        settings.out.write_text(json.dumps(record, indent=2) + "\n")
    record_decision(settings.history, record)
    if not decision.promote:
        raise SystemExit(KEEP)


def record_decision(history: Path, record: dict[str, Any]) -> None:
    """Append a decision to the promotion history, in the shape the API serves (checked here)."""
    line = PromotionRecord.model_validate(record).model_dump_json()
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a", encoding="utf-8") as f:  # one write of one line: appends do not interleave
        f.write(line + "\n")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "python -m agentlm.train.promote")


if __name__ == "__main__":
    main()

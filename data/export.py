"""Logged agent runs back into training data: trajectories as AgentInstruct-format JSONL.

By default only runs worth learning from are exported (``Trajectory.succeeded``: a user liked it,
or an environment rewarded it), and a user's corrected answer replaces the model's. The runs come
from the caller, usually a trajectory store's snapshot (``TrajectoryStore.snapshot()`` on a
read-only connection: exporting while the server runs is safe and sees one consistent moment):
`agentlm data export` writes a file, the server streams the same records at
``GET /v1/trajectories/export``. This module reads no store itself (data/ sits below serve/).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlm.agent.trajectory import Trajectory
from agentlm.data.formats import DataFormatError, conversation_from_trajectory


@dataclass
class ExportReport:
    examined: int = 0  # trajectories in the store
    written: int = 0  # conversations written
    skipped: int = 0  # not succeeded (and include_all off), no steps to learn from, or tool-calling


def trajectory_records(
    trajectories: Iterable[Trajectory],
    include_all: bool = False,
    use_corrections: bool = True,
    report: ExportReport | None = None,
) -> Iterator[dict[str, Any]]:
    """AgentInstruct records of the runs worth learning from (all runs with `include_all`)."""
    report = report if report is not None else ExportReport()
    for traj in trajectories:
        report.examined += 1
        if not traj.steps or not (include_all or traj.succeeded):
            report.skipped += 1
            continue
        try:
            yield conversation_from_trajectory(traj, use_correction=use_corrections).to_record()
        except DataFormatError:
            report.skipped += 1


def export_trajectories(
    trajectories: Iterable[Trajectory],
    out_path: str | Path,
    include_all: bool = False,
    use_corrections: bool = True,
) -> ExportReport:
    """Write `trajectories` to `out_path` as AgentInstruct-format JSONL."""
    report = ExportReport()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as out:
        for record in trajectory_records(trajectories, include_all, use_corrections, report):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            report.written += 1
    return report

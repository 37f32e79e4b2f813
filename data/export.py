"""Logged agent runs back into training data: the trajectory store as AgentInstruct-format JSONL.

By default only runs worth learning from are exported (``Trajectory.succeeded``: a user liked it,
or an environment rewarded it), and a user's corrected answer replaces the model's. The store is
opened read-only, so exporting while the server runs is safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentlm.data.formats import Conversation, DataFormatError, conversation_from_trajectory, write_jsonl
from agentlm.serve.store import TrajectoryStore


@dataclass
class ExportReport:
    examined: int = 0  # trajectories in the store
    written: int = 0  # conversations written
    skipped: int = 0  # not succeeded (and include_all off), no steps to learn from, or tool-calling


def export_trajectories(
    store_path: str | Path, out_path: str | Path, include_all: bool = False, use_corrections: bool = True
) -> ExportReport:
    """Write the store's trajectories to `out_path` as AgentInstruct-format JSONL."""
    report = ExportReport()

    def conversations(store: TrajectoryStore) -> Iterator[Conversation]:
        for traj in store.iter_all():
            report.examined += 1
            if not traj.steps or not (include_all or traj.succeeded):
                report.skipped += 1
                continue
            try:
                yield conversation_from_trajectory(traj, use_correction=use_corrections)
            except DataFormatError:
                report.skipped += 1

    with TrajectoryStore(store_path, readonly=True) as store:
        report.written = write_jsonl(out_path, conversations(store))
    return report

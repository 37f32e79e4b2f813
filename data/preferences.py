"""What users said about agent runs, as preference data: thumbs for KTO, corrections for DPO.

Two kinds of record, both ordinary AgentInstruct conversations (so reading, decontaminating and
mixing them works as for any training file) with one field more:

- **unpaired** (KTO, from a thumb): the run as a conversation, its replies trained, and
  ``"label": true`` (thumbs up) or ``false`` (thumbs down). KTO (Ethayarajh et al., 2024) learns
  from such single judgements: it raises the likelihood of liked replies and lowers that of
  disliked ones, relative to the model it started from.
- **pair** (DPO, from a correction): the conversation up to the corrected reply, which ends it
  (``loss: true``), and ``"rejected"``: the reply the model gave there. A corrected final answer
  is written in the run's protocol (``answer_reply``); a corrected step is the reply the reviewer
  wrote for it. DPO (Rafailov et al., 2023) learns from the pair: the written reply over the
  model's, at the same point of the same conversation.

A corrected run is a pair, not also a thumbs-down: the pair says what was wrong more precisely
than the thumb. Runs without feedback, tool-calling runs (no AgentInstruct form) and runs whose
correction leaves nothing to compare with (a run that ended without a reply to replace) are skipped
and counted.

    agentlm data preferences --out preferences.jsonl [--store PATH]

``train/preference.py`` trains on the file; ``train/run.sh --preference`` runs both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlm.agent.trajectory import Trajectory
from agentlm.data.formats import Conversation, DataFormatError, Turn, conversation_from_trajectory


@dataclass
class PreferenceReport:
    examined: int = 0
    pairs: int = 0  # corrections: DPO pairs
    liked: int = 0  # thumbs up: KTO desirable
    disliked: int = 0  # thumbs down without a correction: KTO undesirable
    skipped: int = 0  # no feedback, tool calling, or nothing to compare a correction with


def is_pair(conv: Conversation) -> bool:
    return "rejected" in conv.extra


def preference_of(traj: Trajectory) -> Conversation | None:
    """The run's preference record, or None when its feedback gives none."""
    fb = traj.feedback
    if fb is None or not traj.steps or traj.protocol == "tools":
        return None
    if fb.corrected:
        return _pair(traj)
    conv = conversation_from_trajectory(traj, use_correction=False)
    conv.extra["label"] = fb.rating > 0
    conv.source = f"feedback/{traj.profile}"
    return conv


def _pair(traj: Trajectory) -> Conversation | None:
    fb = traj.feedback
    assert fb is not None
    if fb.corrected_step is not None:
        if fb.corrected_step >= len(traj.steps) or not fb.corrected_output:
            return None
        rejected = traj.steps[fb.corrected_step].model_output
    else:
        last = traj.steps[-1]
        if last.kind != "answer":  # the run ended on an observation: no reply of the model's to replace
            return None
        rejected = last.model_output
    chosen = conversation_from_trajectory(traj, use_correction=True)  # ends with the corrected reply
    if chosen.turns[-1].role != "assistant" or chosen.turns[-1].content.strip() == rejected.strip():
        return None
    turns = [Turn(t.role, t.content, False if t.role == "assistant" else None) for t in chosen.turns]
    turns[-1] = Turn("assistant", chosen.turns[-1].content, True)
    return Conversation(
        id=traj.id,
        turns=turns,
        source=f"corrections/{traj.profile}",
        extra={"rejected": rejected, "comment": fb.comment},
    )


def preference_records(
    trajectories: Iterable[Trajectory], report: PreferenceReport | None = None
) -> Iterator[dict[str, Any]]:
    report = report if report is not None else PreferenceReport()
    for traj in trajectories:
        report.examined += 1
        try:
            conv = preference_of(traj)
        except DataFormatError:
            conv = None
        if conv is None:
            report.skipped += 1
            continue
        if is_pair(conv):
            report.pairs += 1
        elif conv.extra["label"]:
            report.liked += 1
        else:
            report.disliked += 1
        yield conv.to_record()


def write_preferences(trajectories: Iterable[Trajectory], out_path: str | Path) -> PreferenceReport:
    report = PreferenceReport()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as out:
        for record in preference_records(trajectories, report):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return report


def check_preference(conv: Conversation, where: str) -> None:
    """A record the preference recipe can train on: a label, or a rejected reply to the last turn."""
    if is_pair(conv):
        if not isinstance(conv.extra["rejected"], str) or not conv.extra["rejected"]:
            raise DataFormatError(f"{where}: 'rejected' must be the reply the model gave, a non-empty string")
        if conv.turns[-1].role != "assistant":
            raise DataFormatError(f"{where}: a pair's conversation must end with the preferred reply")
    elif not isinstance(conv.extra.get("label"), bool):
        raise DataFormatError(
            f"{where}: a preference record needs 'label' (true: a liked run, false: a disliked one) "
            "or 'rejected' (the reply the last turn's preferred reply replaces)"
        )

"""Training conversations for the HR and scheduling assistants, over generated companies.

Each example is a question a person would ask (in many phrasings: formal, casual, lower case, a
typo, a first name only, "I'm X, how many ... do I have"), the SQL steps that answer it, and an
answer worded from the rows the database returned. Every statement runs with the real SQL tool
against a generated world (``data/worlds.py``), so each observation is what the agent would see,
and every reply is checked to parse, with the agent's own parser, to the action it was written for.

The kinds: look-ups, counts, aggregates, joins (managers, locations), who/which/when questions,
date arithmetic (free rooms, free time, leave left), policies read from the policy table, bookings
and leave requests as writes that wait for approval, questions the data cannot answer (said so
plainly), and follow-ups that need the earlier turn (earlier turns are context, not trained on).
They live in ``data/assistant_hr.py``, ``data/assistant_scheduling.py`` and
``data/assistant_stats.py``; ``data/assistant_turns.py`` runs one into checked turns. This module
draws them into conversations and exemplar banks, and is the ``agentlm data assistant`` command.

Each conversation opens as the server opens a run of its questions: with the worked example from
the profile's exemplar bank nearest them (agent/exemplars.py), or, with ``--one-shot fixed``, the
profile's own example, which the SFT recipe can then compute once for many conversations.
``--bank`` writes those banks instead: conversations over companies no training data is about,
decontaminated against the evaluation sets.

    python -m agentlm.data.assistant --out assistant.jsonl --worlds 8 --per-world 60 --seed 0
    python -m agentlm.data.assistant --bank --out agent/profiles --worlds 4 --per-world 150 --eval HELDOUT...
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentlm.agent.profiles import Profile, history_messages, load_profile
from agentlm.agent.tools.sql import SQLTool
from agentlm.data.asktask import AssistantDataError
from agentlm.data.assistant_hr import HR_KINDS
from agentlm.data.assistant_scheduling import SCHEDULING_KINDS
from agentlm.data.assistant_turns import run_task
from agentlm.data.decontaminate import EvalIndex, eval_task_texts
from agentlm.data.formats import Conversation, Turn, context_turns, write_jsonl
from agentlm.data.worlds import World, build_world
from agentlm.options import invoke, options_from, settings_of

PROFILES = ("hr-assistant", "scheduling-assistant")


def _prompt(profile: Profile, questions: list[str], rng: random.Random) -> list[Turn]:
    """The opening a run of `questions` gets: with an exemplar bank, one of the nearest examples
    (usually the nearest, as served; sometimes the second or third, so the model also learns to
    answer when the example shown is only close)."""
    rank = rng.choices((0, 1, 2), weights=(6, 2, 2))[0]
    return context_turns(profile.opening_messages(questions, rank))


def build_examples(
    world: World, n: int, rng: random.Random, profiles: dict[str, Profile]
) -> list[Conversation]:
    """`n` conversations over `world`, in the proportions of HR_KINDS and SCHEDULING_KINDS."""
    kinds = [(f, w, "hr-assistant") for f, w in HR_KINDS] + [
        (f, w, "scheduling-assistant") for f, w in SCHEDULING_KINDS if w
    ]
    out: list[Conversation] = []
    attempts = 0
    while len(out) < n and attempts < n * 5:
        attempts += 1
        fn, _, profile_id = rng.choices(kinds, weights=[w for _, w, _ in kinds])[0]
        try:
            task = fn(world, rng)
        except AssistantDataError:
            continue  # the draw has nothing to ask in this world (e.g. no meeting named uniquely)
        profile = profiles[task.profile].with_database(
            world.hr_db if task.profile == "hr-assistant" else world.scheduling_db
        )
        tool = SQLTool(database=profile.database_path(), writes="scratch", render="repr")
        try:
            turns, answer = run_task(task, tool)
            questions, body, kind = [turns[0].content], turns, task.kind
            follow = task.follow_up
            if follow is not None and rng.random() < 0.7:
                # The follow-up sees the earlier turn as the server renders it (history_messages): the
                # question and the answer the person saw, not trained on; then its own steps, trained on.
                follow_turns, _ = run_task(follow, tool)
                earlier = [
                    {"role": "user", "content": turns[0].content},
                    {"role": "assistant", "content": answer},
                ]
                questions = [turns[0].content, follow_turns[0].content]
                body = context_turns(history_messages("db", earlier)) + follow_turns
                kind = f"{task.kind}+{follow.kind}"
        except AssistantDataError:
            continue  # a draw that does not fit this world (no rows, a missing room): draw again
        finally:
            tool.close()
        out.append(Conversation(f"assistant-w{world.seed}-{len(out):04d}", _prompt(profile, questions, rng) + body,
                                source=f"assistant/{kind}", extra={"profile": task.profile}))  # fmt: skip
    return out


def generate(
    worlds: int,
    per_world: int,
    seed: int,
    folder: Path,
    one_shot: str = "nearest",
) -> list[Conversation]:
    """Conversations over `worlds` generated companies. `one_shot`: "nearest" shows each the
    worked example the server would (its profile's exemplar bank), "fixed" the profile's one
    `one_shot`, which every conversation of a profile then shares (train/prefix.py computes that
    opening once per micro batch: about 2.5x the conversations per hour on the CPU)."""
    if one_shot not in ("nearest", "fixed"):
        raise ValueError(f"one_shot must be 'nearest' or 'fixed', not {one_shot!r}")
    profiles = {p: load_profile(p) for p in PROFILES}
    if one_shot == "fixed":
        profiles = {p: profile.model_copy(update={"exemplars": None}) for p, profile in profiles.items()}
    rng = random.Random(seed)
    out = []
    for w in range(worlds):
        world = build_world(1000 + seed * 100 + w, folder)
        out += build_examples(world, per_world, rng, profiles)
    return out


# Banks come from companies no training conversation is about (training uses world seeds 1000 +
# 100 * seed + w), so a conversation's example never shows its own company's answers.
BANK_SEED = 50
BANK_MAX_CHARS = 1400  # longer examples (many rows) cost more prompt than they teach
# Kinds whose answer turns on what one company's data lacks (a person or room it does not have, a
# policy it never wrote): worded like the common questions, they would be shown for those and
# teach "there is no such person". Training conversations still have them.
BANK_SKIP = {"unknown_person", "unknown_room", "policy_missing"}


def generate_bank(
    worlds: int, per_world: int, folder: Path, evals: EvalIndex | None = None
) -> dict[str, list[dict]]:
    """Exemplar-bank records (agent/exemplars.py) per profile, from generated companies.

    Each is a conversation's own turns without its opening; its query is its user questions (the
    earlier one of a follow-up first). Identical questions are kept once; an example any of whose
    questions overlaps an evaluation task (`evals`) is left out, as training data is: every
    training conversation and every served run shows one.
    """
    opening = {p: len(load_profile(p).opening_messages()) for p in PROFILES}  # with the fixed example
    banks: dict[str, list[dict]] = {p: [] for p in PROFILES}
    seen: set[str] = set()
    for c in generate(worlds, per_world, BANK_SEED, folder, one_shot="fixed"):
        profile, kind = c.extra["profile"], c.source.removeprefix("assistant/")
        if BANK_SKIP & set(kind.split("+")):
            continue
        body = c.turns[opening[profile] :]
        questions = [body[0].content] + ([body[2].content] if "+" in kind else [])
        query = " ".join(questions)
        if query in seen or sum(len(t.content) for t in body) > BANK_MAX_CHARS:
            continue
        if evals is not None and any(evals.hit(q) for q in questions):
            continue
        seen.add(query)
        messages = [{"role": t.role, "content": t.content} for t in body]
        banks[profile].append({"kind": kind, "query": query, "messages": messages})
    return banks


class AssistantSettings(BaseModel):
    """`agentlm data assistant`: conversations, or with ``bank`` exemplar banks, over generated companies."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="Conversations (JSONL); with --bank, a folder.")
    worlds: int = Field(default=8, ge=0, description="Generated companies (none is the shipped sample).")
    per_world: int = Field(default=60, ge=0, description="Conversations drawn over each company.")
    seed: int = Field(
        default=0,
        description="Seeds the companies and the draws; --bank ignores it (banks have companies of "
        "their own).",
    )
    one_shot: Literal["nearest", "fixed"] = Field(
        default="nearest",
        description="The worked example each conversation shows: the nearest in the profile's bank (as "
        "served), or the profile's fixed one (shared by all, so training shares its computation).",
    )
    bank: bool = Field(
        default=False,
        description="Write each profile's exemplar bank (<profile>.exemplars.jsonl) into --out instead.",
    )
    eval: list[Path] = Field(
        default_factory=list, description="With --bank: evaluation task files no example may overlap."
    )


@options_from(AssistantSettings, list(AssistantSettings.model_fields))
def run(**options: Any) -> None:
    """Training conversations for the HR and scheduling assistants, over generated companies."""
    settings = settings_of(AssistantSettings, options, "agentlm data assistant")
    out = settings.out
    with tempfile.TemporaryDirectory() as tmp:
        if settings.bank:
            out.mkdir(parents=True, exist_ok=True)
            evals = EvalIndex([t for path in settings.eval for t in eval_task_texts(path)])
            banks = generate_bank(settings.worlds, settings.per_world, Path(tmp), evals)
            for profile, records in banks.items():
                path = out / f"{profile}.exemplars.jsonl"
                path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                print(f"wrote {len(records)} worked examples to {path}")
            return
        conversations = generate(
            settings.worlds, settings.per_world, settings.seed, Path(tmp), one_shot=settings.one_shot
        )
    n = write_jsonl(out, conversations)
    print(f"wrote {n} assistant conversations to {out}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm data assistant")


if __name__ == "__main__":
    main()

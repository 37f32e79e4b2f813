"""Decontamination: drop training examples whose task text overlaps an evaluation task.

AgentTuning did not do this; it matters here because training tasks are generated from the same
environments the evaluation uses. An example is contaminated when its task (the user turn the model's own first
reply answers, after the opening prompt and 1-shot; for plain chat the first user turn) shares an n-gram of words (13 by default, as GPT-3's and many
later decontamination passes used; short tasks fall back to their whole text) with any
evaluation task. Text is compared lower-cased with punctuation removed.

    python -m agentlm.data.decontaminate --train mix.jsonl --eval dbbench_dev.jsonl os_dev.json --out clean.jsonl
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlm.data.formats import Conversation, read_jsonl, write_jsonl
from agentlm.options import invoke, options_from, settings_of

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The text's word n-grams; a text shorter than n words is one gram (itself)."""
    w = words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def task_text(conv: Conversation) -> str:
    """The task: the user turn before the model's first own reply (``loss: true``), else the first."""
    first_own = next((i for i, t in enumerate(conv.turns) if t.role == "assistant" and t.loss is True), None)
    before = conv.turns[:first_own] if first_own is not None else conv.turns
    users = [t.content for t in before if t.role == "user"]
    if not users:
        return ""
    return users[-1] if first_own is not None else users[0]


def eval_task_texts(path: str | Path) -> list[str]:
    """Task texts of an evaluation file: AgentBench DB/OS tasks, conversations (their task turn),
    held-out assistant questions (every turn) or tool-calling requests (every user message)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    records = (
        json.loads(text)
        if text.lstrip().startswith("[")
        else [json.loads(x) for x in text.splitlines() if x.strip()]
    )
    out = []
    for r in records:
        if "description" in r:  # AgentBench task files
            out.append(f"{r['description']}\n{r.get('add_description', '')}".strip())
        elif "conversations" in r:
            out.append(task_text(Conversation.from_record(r, str(path))))
        elif "turns" in r:  # held-out assistant questions (benchmarks/heldout/assistant_questions.jsonl)
            out.extend(t["question"] for t in r["turns"])
        elif "messages" in r:  # held-out tool-calling requests: every user turn
            out.extend(m["content"] for m in r["messages"] if m.get("role") == "user" and m.get("content"))
    return out


@dataclass
class DecontaminationReport:
    examined: int = 0
    dropped: dict[str, str] = field(default_factory=dict)  # training id -> the evaluation task it overlaps

    def lines(self) -> list[str]:
        return [
            f"{len(self.dropped)} of {self.examined} training examples overlap an evaluation task; dropped"
        ]


class EvalIndex:
    """The word n-grams of evaluation tasks, to ask whether a text overlaps any of them."""

    def __init__(self, eval_texts: list[str], n: int = 13):
        self.n = n
        self._grams: dict[tuple[str, ...], str] = {}
        for text in eval_texts:
            for gram in ngrams(text, n):
                self._grams.setdefault(gram, text)

    def hit(self, text: str) -> str | None:
        """The evaluation task `text` shares an n-gram with, or None."""
        return next((self._grams[g] for g in ngrams(text, self.n) if g in self._grams), None)


def decontaminate(
    train: list[Conversation], eval_texts: list[str], n: int = 13
) -> tuple[list[Conversation], DecontaminationReport]:
    """Training examples without an n-gram in common with any evaluation task."""
    index = EvalIndex(eval_texts, n)
    report = DecontaminationReport(examined=len(train))
    kept = []
    for conv in train:
        hit = index.hit(task_text(conv))
        if hit is None:
            kept.append(conv)
        else:
            report.dropped[conv.id] = hit[:200]
    return kept, report


PROG = "agentlm data decontaminate"


class DecontaminateSettings(BaseModel):
    """What `agentlm data decontaminate` takes: one field an option."""

    model_config = ConfigDict(extra="forbid")

    train: str = Field(description="Training conversations (AgentInstruct JSONL).")
    eval: list[str] = Field(min_length=1, description="Evaluation task files (several after one --eval).")
    out: str = Field(description="Where the kept training conversations are written (JSONL).")
    n: int = Field(default=13, ge=1, description="N-gram length in words.")


@options_from(DecontaminateSettings, ("train", "eval", "out", "n"), flags={"n": ("-n", "--n")})
def run(**options: Any) -> None:
    """Drop training examples whose task overlaps an evaluation task."""
    settings = settings_of(DecontaminateSettings, options, PROG)
    texts = [t for path in settings.eval for t in eval_task_texts(path)]
    kept, report = decontaminate(read_jsonl(settings.train), texts, settings.n)
    write_jsonl(settings.out, kept)
    for line in report.lines():
        print(line)
    for conv_id, hit in sorted(report.dropped.items()):
        print(f"  {conv_id}: {hit!r}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, PROG)


if __name__ == "__main__":
    main()

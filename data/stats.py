"""What a training set holds: examples, tokens, turns and lengths per source, printed and plotted.

Tokens are counted with the tokenizer the data will be trained with when one is given (a
checkpoint directory), else estimated at ~4 characters a token. Trainable tokens follow the loss
rules training uses (assistant turns, honouring AgentInstruct's ``loss`` flag). Records collected
by ``data/collect.py`` may say how many of their steps were repaired by BLEU and whether their
thoughts were supplemented (``repaired_steps``, ``thought_supplemented``); their shares are shown.

    python -m agentlm.data.stats mix.jsonl [--tokenizer DIR] [--plot stats.png]
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field

from agentlm.data.formats import Conversation, read_jsonl
from agentlm.options import invoke, options_from, settings_of


@dataclass
class SourceStats:
    examples: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    turns: int = 0
    lengths: list[int] = field(default_factory=list)  # tokens per example
    repaired: int = 0  # examples with at least one BLEU-repaired step
    thought_supplemented: int = 0


def _flags(path: Path) -> dict[str, tuple[bool, bool]]:
    """Per record id: (repaired, thought supplemented), from the raw records' optional fields."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            out[str(r.get("id"))] = (bool(r.get("repaired_steps")), bool(r.get("thought_supplemented")))
    return out


def compute(paths: list[Path], count: Callable[[str], int]) -> dict[str, SourceStats]:
    """Stats per source (the records' ``source``, else the file name)."""
    by_source: dict[str, SourceStats] = {}
    for path in paths:
        flags = _flags(path) if path.suffix == ".jsonl" else {}
        conv: Conversation
        for conv in read_jsonl(path):
            s = by_source.setdefault(conv.source or path.stem, SourceStats())
            sizes = [count(t.content) for t in conv.turns]
            s.examples += 1
            s.tokens += sum(sizes)
            s.trainable_tokens += sum(n for t, n in zip(conv.turns, sizes, strict=True) if t.trainable())
            s.turns += len(conv.turns)
            s.lengths.append(sum(sizes))
            repaired, supplemented = flags.get(conv.id, (False, False))
            s.repaired += repaired
            s.thought_supplemented += supplemented
    return by_source


def table(stats: dict[str, SourceStats]) -> str:
    header = f"{'source':<32} {'examples':>8} {'tokens':>10} {'trainable':>10} {'turns/ex':>8} {'median len':>10} {'max len':>8} {'repaired':>8} {'thoughts+':>9}"
    rows = [header, "-" * len(header)]
    total = SourceStats()
    for name, s in sorted(stats.items()):
        rows.append(
            f"{name[:32]:<32} {s.examples:>8} {s.tokens:>10} {s.trainable_tokens:>10} "
            f"{s.turns / s.examples:>8.1f} {statistics.median(s.lengths):>10.0f} {max(s.lengths):>8} "
            f"{s.repaired / s.examples:>8.1%} {s.thought_supplemented / s.examples:>9.1%}"
        )
        total.examples += s.examples
        total.tokens += s.tokens
        total.trainable_tokens += s.trainable_tokens
    rows.append("-" * len(header))
    rows.append(f"{'total':<32} {total.examples:>8} {total.tokens:>10} {total.trainable_tokens:>10}")
    return "\n".join(rows)


def plot(stats: dict[str, SourceStats], out: str | Path) -> Path:
    """A PNG: examples and tokens per source, and the length distribution of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(stats)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(names, [stats[n].tokens for n in names], color="tab:blue", label="tokens")
    left.barh(names, [stats[n].trainable_tokens for n in names], color="tab:orange", label="trainable tokens")
    left.set_xlabel("tokens")
    left.legend()
    left.set_title("tokens per source")
    right.hist([stats[n].lengths for n in names], bins=30, label=names, stacked=True)
    right.set_xlabel("tokens per example")
    right.set_ylabel("examples")
    right.legend(fontsize="small")
    right.set_title("length distribution")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


class StatsSettings(BaseModel):
    """What `agentlm data stats` reads, how it counts tokens, and where it draws the plot."""

    model_config = ConfigDict(extra="forbid")

    files: list[Path] = Field(
        min_length=1, description="Training conversations (AgentInstruct/ShareGPT JSONL)."
    )
    tokenizer: str | None = Field(
        default=None, description="A checkpoint directory whose tokenizer counts the tokens."
    )
    plot: Path | None = Field(default=None, description="Write a PNG of the mix here.")


@options_from(StatsSettings, ["tokenizer", "plot"])
def run(
    files: Annotated[
        list[Path], typer.Argument(help=StatsSettings.model_fields["files"].description, show_default=False)
    ],
    **options: Any,
) -> None:
    """Examples, tokens, lengths per source of a training set; --plot writes a PNG."""
    settings = settings_of(StatsSettings, {"files": files, **options}, "agentlm data stats")
    count: Callable[[str], int] = lambda text: len(text) // 4 + 1  # noqa: E731
    if settings.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(settings.tokenizer)
        count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    stats = compute(settings.files, count)
    print(table(stats))
    if settings.plot:
        print(f"plot: {plot(stats, settings.plot)}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm data stats")


if __name__ == "__main__":
    main()

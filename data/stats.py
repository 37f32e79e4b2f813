"""What a training set holds: examples, tokens, turns and lengths per source, printed and plotted.

Tokens are counted with the tokenizer the data will be trained with when one is given (a
checkpoint directory), else estimated at ~4 characters a token. Trainable tokens follow the loss
rules training uses (assistant turns, honouring AgentInstruct's ``loss`` flag). Records collected
by ``data/collect.py`` may say how many of their steps were repaired by BLEU and whether their
thoughts were supplemented (``repaired_steps``, ``thought_supplemented``); their shares are shown.

    python -m agentlm.data.stats mix.jsonl [--tokenizer DIR] [--plot stats.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentlm.data.formats import Conversation, read_jsonl


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agentlm data stats", description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="+", type=Path, help="training conversations (AgentInstruct/ShareGPT JSONL)"
    )
    parser.add_argument("--tokenizer", help="a checkpoint directory whose tokenizer counts the tokens")
    parser.add_argument("--plot", type=Path, help="write a PNG of the mix here")
    args = parser.parse_args(argv)
    count: Callable[[str], int] = lambda text: len(text) // 4 + 1  # noqa: E731
    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    stats = compute(args.files, count)
    print(table(stats))
    if args.plot:
        print(f"plot: {plot(stats, args.plot)}")


if __name__ == "__main__":
    main()

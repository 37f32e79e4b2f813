"""Mix agent trajectories with general chat at ratio η, as AgentTuning did.

η is the agent share of training EXAMPLES. The paper writes the objective as
η·E_agent[log π(y|x)] + (1-η)·E_general[log π(y|x)], expectations over examples; drawing η of the
examples from the agent data gives the same objective in expectation (the SFT recipe sums the
loss over a step's tokens and divides by their count, a scale that does not favour either source),
and it is what the released AgentLM mixture did: it sampled conversations, not tokens.
With n agent examples, the mix takes round(n·(1-η)/η) general examples; when there are fewer, it
repeats them (sampling with replacement, spread evenly) and the report says so. η = 1 is agent
data only; η = 0 is general only (all of it).

    python -m agentlm.data.mix --agent a.jsonl --general g.jsonl --eta 0.2 --seed 0 --out mix.jsonl
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlm.data.formats import Conversation, read_jsonl, write_jsonl
from agentlm.options import invoke, options_from, settings_of


class MixSettings(BaseModel):
    """What `agentlm data mix` mixes, at what share, and where it writes the mixture."""

    model_config = ConfigDict(extra="forbid")

    agent: list[Path] = Field(default_factory=list, description="Agent trajectory files (JSONL/JSON).")
    general: list[Path] = Field(default_factory=list, description="General chat files (JSONL/JSON).")
    eta: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="The agent share of examples: 1 is agent data only, 0 general only.",
    )
    seed: int = Field(default=0, description="Seeds the general sample and the shuffle.")
    out: Path = Field(description="The mixture's JSONL file.")


@dataclass
class MixReport:
    eta: float
    seed: int
    agent_examples: int
    general_examples: int
    general_available: int
    general_with_replacement: bool
    examples_by_source: dict[str, int] = field(default_factory=dict)
    characters_by_source: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        total = self.agent_examples + self.general_examples
        share = self.agent_examples / total if total else 0.0
        out = [
            f"eta={self.eta} seed={self.seed}: {total} examples, agent share {share:.3f} "
            f"({self.agent_examples} agent, {self.general_examples} general of {self.general_available} available"
            f"{', repeated: sampled with replacement' if self.general_with_replacement else ''})"
        ]
        for source, n in sorted(self.examples_by_source.items()):
            out.append(
                f"  {source or '(no source)'}: {n} examples, {self.characters_by_source[source]} characters"
            )
        return out


def mix(
    agent: list[Conversation], general: list[Conversation], eta: float, seed: int = 0
) -> tuple[list[Conversation], MixReport]:
    """Return the shuffled mixture and a report of what went in."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be between 0 and 1 (the agent share of examples), got {eta}")
    if eta > 0 and not agent:
        raise ValueError("eta > 0 needs agent examples, but none were given")
    if eta < 1 and not general:
        raise ValueError(
            "eta < 1 needs general examples, but none were given (use --eta 1 for agent data only)"
        )
    rng = random.Random(seed)
    if eta == 0:
        chosen_agent, n_general = [], len(general)
    else:
        chosen_agent, n_general = list(agent), round(len(agent) * (1 - eta) / eta)
    with_replacement = n_general > len(general)
    # Short of general data, repeat it evenly (every example k or k+1 times) rather than drawing
    # independently with replacement, which would leave some examples out and triple others.
    repeats, rest = divmod(n_general, len(general)) if general else (0, 0)
    chosen_general = list(general) * repeats + rng.sample(general, rest)
    mixture = chosen_agent + chosen_general
    rng.shuffle(mixture)

    examples, characters = Counter(), Counter()
    for conv in mixture:
        examples[conv.source] += 1
        characters[conv.source] += sum(len(t.content) for t in conv.turns)
    report = MixReport(
        eta=eta,
        seed=seed,
        agent_examples=len(chosen_agent),
        general_examples=len(chosen_general),
        general_available=len(general),
        general_with_replacement=with_replacement,
        examples_by_source=dict(examples),
        characters_by_source=dict(characters),
    )
    return mixture, report


@options_from(MixSettings, MixSettings.model_fields)
def run(**options: Any) -> None:
    """Mix agent trajectories with general chat at eta (the agent share of examples); print a report."""
    settings = settings_of(MixSettings, options, "agentlm data mix")
    agent = [c for path in settings.agent for c in read_jsonl(path)]
    general = [c for path in settings.general for c in read_jsonl(path)]
    mixture, report = mix(agent, general, settings.eta, settings.seed)
    write_jsonl(settings.out, mixture)
    print("\n".join(report.lines()))
    print(f"wrote {len(mixture)} examples to {settings.out}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm data mix")


if __name__ == "__main__":
    main()

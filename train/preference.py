"""Preference tuning from users' feedback: KTO on thumbs, DPO on corrections, in one DeepSpeed run.

The SFT recipe's setup (tokenizer, LoRA or full weights, DeepSpeed, resume, checkpoint) with
another loss. Records come from data/preferences.py:

- a **pair** (a correction) is the conversation ending with the preferred reply plus the reply the
  model gave there (``rejected``). DPO's loss (Rafailov et al., 2023):
  ``-log σ(β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])``;
- an **unpaired** record (a thumb) is a run with ``label`` true or false. KTO's loss (Ethayarajh
  et al., 2024): with the implied reward ``r = log π(y) − log π_ref(y)`` and a reference point
  ``z₀``, ``λ_D·(1 − σ(β·(r − z₀)))`` for a liked run and ``λ_U·(1 − σ(β·(z₀ − r)))`` for a disliked
  one. ``z₀`` estimates the policy's KL from the reference: here the micro batch's mean reward over
  all its sequences, clipped at 0 and not differentiated (TRL estimates it from mismatched prompt
  and completion pairs, which costs a forward pass more per example).

``log π`` sums the log-probabilities of the trained tokens (the model's own replies) of a sequence.
The reference ``π_ref`` is the model the run starts from (the base with ``init_adapter``, if any):
its log-probabilities are computed once before the first step, so no second model is held in
memory. The step's loss is the mean over its examples; the run log shows it with the pairs' reward
accuracy (the share whose preferred reply gained on the rejected one) and the mean KTO reward.

    python -m agentlm.train.preference --config gemma-270m-lora --data preferences.jsonl \
        --base-model BASE --output-dir runs/pref [--set init_adapter=models/agentlm-gemma-3-270m] \
        [--set beta=0.1] [--lr 5e-5]
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from agentlm.data.formats import Conversation, Turn, read_jsonl
from agentlm.data.masks import TokenizedExample, tokenize_conversation
from agentlm.data.preferences import check_preference, is_pair
from agentlm.options import invoke, options_from
from agentlm.train.loss import trained_logits
from agentlm.train.packing import padded_batch
from agentlm.train.sft import (
    COMMAND_LINE,
    LocalRankOption,
    PresetOption,
    SetOption,
    SFTConfig,
    SFTRecipe,
    run_recipe,
)

log = logging.getLogger("agentlm.train.preference")


class PreferenceConfig(SFTConfig):
    """A preference run: an SFT preset (its model, LoRA and batching settings) and the losses' own."""

    beta: float = Field(
        default=0.1, gt=0, description="How far from the reference the policy may move (DPO's and KTO's β)."
    )
    desirable_weight: float = Field(default=1.0, ge=0, description="KTO's λ_D: the weight of liked runs.")
    undesirable_weight: float = Field(
        default=1.0, ge=0, description="KTO's λ_U: the weight of disliked runs."
    )


@dataclass
class PreferenceExample:
    """One record: the preferred and the rejected sequence of a pair, or one labelled sequence."""

    sequences: list[TokenizedExample]
    label: bool | None  # None: a pair (sequences[0] preferred over sequences[1])
    reference: list[float] = field(default_factory=list)  # log π_ref of each sequence


def _rejected(conv: Conversation) -> Conversation:
    """The pair's conversation with the model's own reply in place of the preferred one."""
    turns = [*conv.turns[:-1], Turn("assistant", conv.extra["rejected"], True)]
    return Conversation(conv.id, turns, conv.source)


def sequence_logps(model: Any, batch: Any) -> Any:
    """Each row's summed log-probability of its trained tokens: (rows,).

    As in train/loss.py, the output layer runs only where the next token is trained."""
    import torch
    import torch.nn.functional as F

    logits, targets, trained = trained_logits(model, batch)
    token_logps = -F.cross_entropy(logits, targets, reduction="none")
    rows = trained.nonzero()[:, 0]
    return torch.zeros(trained.shape[0], device=token_logps.device).index_add(0, rows, token_logps)


def preference_loss(
    examples: list[PreferenceExample], policy: Any, cfg: PreferenceConfig
) -> tuple[Any, dict[str, float]]:
    """The summed DPO and KTO losses of `examples`, whose sequences' log π are `policy` in order,
    and figures for the log (pairs right, mean margin, mean KTO reward)."""
    import torch
    import torch.nn.functional as F

    reference = torch.tensor([r for ex in examples for r in ex.reference], device=policy.device)
    rewards = policy - reference
    z0 = rewards.detach().mean().clamp(min=0)  # the KL estimate: a reference point, not a gradient path
    losses, margins, kto_rewards, at = [], [], [], 0
    for ex in examples:
        if ex.label is None:
            margin = rewards[at] - rewards[at + 1]
            losses.append(-F.logsigmoid(cfg.beta * margin))
            margins.append(margin.item())
        else:
            r = rewards[at]
            if ex.label:
                losses.append(cfg.desirable_weight * (1 - torch.sigmoid(cfg.beta * (r - z0))))
            else:
                losses.append(cfg.undesirable_weight * (1 - torch.sigmoid(cfg.beta * (z0 - r))))
            kto_rewards.append(r.item() if ex.label else -r.item())
        at += len(ex.sequences)
    figures = {"pairs_right": sum(m > 0 for m in margins), "pairs": len(margins)}
    figures |= {"margin_sum": sum(margins), "kto_reward_sum": sum(kto_rewards), "kto": len(kto_rewards)}
    return torch.stack(losses).sum(), figures


class PreferenceRecipe(SFTRecipe):
    cfg: PreferenceConfig

    def _load_examples(self) -> list[PreferenceExample]:  # type: ignore[override]
        cfg = self.cfg
        examples = []
        for path in cfg.data:
            for n, conv in enumerate(read_jsonl(path), start=1):
                check_preference(conv, f"{path} record {n}")
                convs = [conv, _rejected(conv)] if is_pair(conv) else [conv]
                seqs = [tokenize_conversation(self.tokenizer, self.template, c, True) for c in convs]
                if any(len(s.input_ids) > cfg.max_seq_len for s in seqs):
                    self.dropped_too_long += 1
                elif any(s.trainable_tokens == 0 for s in seqs):
                    self.dropped_no_target += 1
                else:
                    examples.append(PreferenceExample(seqs, None if is_pair(conv) else conv.extra["label"]))
        pairs = sum(ex.label is None for ex in examples)
        liked = sum(ex.label is True for ex in examples)
        log.info(
            "%d preference examples: %d pairs, %d liked, %d disliked; dropped %d longer than %d tokens "
            "and %d with no reply to learn",
            len(examples), pairs, liked, len(examples) - pairs - liked, self.dropped_too_long,
            cfg.max_seq_len, self.dropped_no_target,
        )  # fmt: skip
        return examples

    def units_per_epoch(self) -> int:
        return len(self.examples)

    def micro_batches(self) -> Iterator[list[PreferenceExample]]:  # type: ignore[override]
        """Endless shuffled micro batches of batch_size examples for this rank, seeded."""
        rng = random.Random(self.cfg.seed)
        size = self.cfg.batch_size
        while True:
            order = list(range(len(self.examples)))
            rng.shuffle(order)
            mine = order[self.rank :: self.world_size]
            for i in range(0, len(mine) - size + 1 or 1, size):
                yield [self.examples[j] for j in mine[i : i + size]]

    def _batch(self, examples: list[PreferenceExample]) -> Any:
        pad = self.tokenizer.pad_token_id
        return padded_batch([s for ex in examples for s in ex.sequences], pad).to(self.device)

    def _reference(self) -> None:
        """log π_ref of every sequence, with the weights the run starts from."""
        import torch

        started = time.perf_counter()
        self.engine.eval()
        with torch.no_grad():
            size = self.cfg.batch_size
            for i in range(0, len(self.examples), size):
                chunk = self.examples[i : i + size]
                logps = sequence_logps(self.engine, self._batch(chunk)).tolist()
                for ex in chunk:
                    ex.reference, logps = logps[: len(ex.sequences)], logps[len(ex.sequences) :]
        self.engine.train()
        log.info("reference log-probabilities of %d examples in %.1f s", len(self.examples),
                 time.perf_counter() - started)  # fmt: skip

    desc = "preference"

    def before_training(self) -> None:
        self._reference()  # before resuming: the reference is the starting model, not a resumed one

    def optimizer_step(self, micro_batches: list[list[PreferenceExample]]) -> tuple[Any, str]:  # type: ignore[override]
        """The step's loss is the mean over its examples on all ranks."""
        import torch
        import torch.distributed as dist

        n_examples = torch.tensor(float(sum(len(mb) for mb in micro_batches)))
        dist.all_reduce(n_examples)
        step_loss = torch.zeros((), device=self.device)
        totals: dict[str, float] = {}
        for examples in micro_batches:
            policy = sequence_logps(self.engine, self._batch(examples))
            loss, figures = preference_loss(examples, policy, self.cfg)
            loss = loss / n_examples.item()
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            self.engine.step()
            step_loss += loss.detach()
            totals = {k: totals.get(k, 0) + v for k, v in figures.items()}
        return step_loss, _figures(totals)


def _figures(totals: dict[str, float]) -> str:
    out = ""
    if totals.get("pairs"):
        out += f" pairs right {totals['pairs_right'] / totals['pairs']:.2f}"
        out += f" margin {totals['margin_sum'] / totals['pairs']:+.3f}"
    if totals.get("kto"):
        out += f" kto reward {totals['kto_reward_sum'] / totals['kto']:+.3f}"
    return out


@options_from(PreferenceConfig, COMMAND_LINE)
def run(
    config: PresetOption = None, set_: SetOption = None, local_rank: LocalRankOption = None, **options: Any
) -> None:
    """Tune on users' preferences (KTO on thumbs, DPO on corrections) and write a Hugging Face checkpoint."""
    run_recipe(PreferenceRecipe, PreferenceConfig, config, set_, options, "agentlm preference")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "python -m agentlm.train.preference")


if __name__ == "__main__":
    main()

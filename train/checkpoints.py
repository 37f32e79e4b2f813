"""What a run writes under its output_dir: resume state while it trains, a plain checkpoint at the end.

Resume state is DeepSpeed's own (weights, optimizer, scheduler, step) in ``<output_dir>/resume``,
one step's at a time. The final checkpoint is a plain Hugging Face one (no DeepSpeed state, LoRA
adapters merged into the weights) that transformers and vLLM load as is, with the chat template
saved with the tokenizer, the stop tokens in its generation config, and a model card.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agentlm.data.templates import ChatTemplate

if TYPE_CHECKING:
    from agentlm.train.sft import SFTConfig

log = logging.getLogger(__name__)


def save_resume_state(engine: Any, resume_dir: Path, step: int, recent: list[float], rank: int) -> None:
    """DeepSpeed state at `step`; the previous one is removed once this one is complete."""
    previous = (resume_dir / "latest").read_text().strip() if (resume_dir / "latest").is_file() else None
    engine.save_checkpoint(str(resume_dir), tag=f"step{step}", client_state={"step": step, "recent": recent})
    if rank == 0:
        if previous and previous != f"step{step}":
            shutil.rmtree(resume_dir / previous, ignore_errors=True)
        log.info("checkpoint at step %d in %s", step, resume_dir)


def save_pretrained(
    engine: Any,
    tokenizer: Any,
    template: ChatTemplate,
    out: Path,
    *,
    lora: bool,
    save_adapter: bool,
    rank: int,
) -> bool:
    """The trained model and its tokenizer in `out`, on rank 0 (True there); every rank must call it."""
    state_dict = None
    if engine.zero_optimization_stage() == 3:
        # Parameters are partitioned over ranks: every rank takes part in gathering them.
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if rank != 0:
        return False
    out.mkdir(parents=True, exist_ok=True)
    model = engine.module
    if lora:  # fold the adapters into the weights: serving needs no peft
        if state_dict is not None:
            model.load_state_dict(state_dict, assign=True)
            state_dict = None
        if save_adapter:
            model.save_pretrained(out / "adapter", safe_serialization=True)
        model = model.merge_and_unload()
    model.config.use_cache = True
    stop_ids = [tokenizer.convert_tokens_to_ids(s) for s in template.stop]
    model.generation_config.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else stop_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return True


def model_card(
    cfg: SFTConfig,
    *,
    examples: int,
    dropped_too_long: int,
    dropped_no_target: int,
    total_steps: int,
    final_loss: float,
    train_seconds: float,
    world_size: int,
) -> str:
    """The checkpoint's README.md: base model, data, mix and hyperparameters of the run."""
    hyper = cfg.model_dump(exclude={"data", "output_dir", "mix_report"})
    mix = (
        Path(cfg.mix_report).read_text().strip() if cfg.mix_report and Path(cfg.mix_report).is_file() else ""
    )
    lines = [
        "---",
        "library_name: transformers",
        "tags: [agentlm, agent-tuning]",
        "---",
        f"# AgentLM checkpoint ({cfg.preset or 'custom'} preset)",
        "",
        f"Fine-tuned from `{cfg.base_model}` with AgentLM's SFT recipe: agent trajectories mixed with",
        f"general chat at eta = {cfg.eta if cfg.eta is not None else 'n/a'} (agent share of examples), loss on assistant",
        f"turns only{' whose AgentInstruct `loss` flag is not false' if cfg.honour_loss_flag else ''}.",
        f"Chat template: `{cfg.template}` (stored in tokenizer_config.json).",
        "",
        "## Data",
        "",
        *[f"- `{p}`" for p in cfg.data],
        f"- {examples} examples trained; {dropped_too_long} dropped as longer than "
        f"{cfg.max_seq_len} tokens; {dropped_no_target} with nothing to learn",
        *(["", "```", mix, "```"] if mix else []),
        "",
        "## Training",
        "",
        f"- optimizer steps: {total_steps}; final loss: {final_loss:.4f}; "
        f"time: {train_seconds:.0f} s on {world_size} rank(s)",
        "- hyperparameters:",
        "",
        "```yaml",
        yaml.safe_dump(hyper, sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)

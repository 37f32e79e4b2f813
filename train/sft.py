"""Supervised fine-tuning on agent trajectories and general chat, with DeepSpeed.

The recipe reads top to bottom: validate the config, set up (distributed backend, tokenizer,
model, data, DeepSpeed engine), train in one loop, save a plain Hugging Face checkpoint, clean up.
Loss is computed on assistant turns only (and, by default, only on turns whose AgentInstruct
``loss`` flag is not false), through the labels that data/masks.py builds. The recipe's parts live
beside it: micro batches in train/batches.py (packing.py, prefix.py), the loss in train/loss.py,
resume state and the final checkpoint in train/checkpoints.py.

    python -m agentlm.train.sft --config train/configs/tiny.yaml --data mix.jsonl \
        --base-model path/to/base --output-dir runs/ckpt [--set key=value ...]
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentlm.data.formats import DataFormatError, read_jsonl
from agentlm.data.masks import IGNORE_INDEX, TokenizedExample, tokenize_conversation
from agentlm.data.templates import get_template
from agentlm.options import invoke, options_from
from agentlm.processes import free_port
from agentlm.train.batches import micro_batch_stream, units_per_epoch
from agentlm.train.checkpoints import model_card, save_pretrained, save_resume_state
from agentlm.train.loss import causal_lm_loss

log = logging.getLogger("agentlm.train.sft")  # by name: `python -m` runs this module as __main__


class ConfigError(ValueError):
    """A training config that cannot work; the message says which value and why."""


class SFTConfig(BaseModel):
    """A training run: a preset (train/configs/NAME.yaml) with overrides on top. Each field is a
    `--set key=value` and, for those in ``COMMAND_LINE``, an option of `python -m agentlm.train.sft`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_model: str = Field(default="", description="The checkpoint to start from: a directory or a hub id.")
    data: list[str] = Field(default_factory=list, description="JSONL conversation files (repeat the option).")
    output_dir: str = Field(default="", description="Where the checkpoint is written.")
    preset: str = Field(default="", description="The preset's name (set from --config).")
    template: str = Field(
        default="llama-2", description="The chat format the checkpoint is trained and served with."
    )
    honour_loss_flag: bool = Field(
        default=True, description="False trains on every assistant turn, as FastChat does."
    )
    pack: bool = Field(
        default=False,
        description="Lay conversations end to end in rows of max_seq_len tokens (exact boundaries: "
        "restarted positions, block-diagonal attention) instead of padding each; batch_size then counts rows.",
    )
    share_prefixes: bool = Field(
        default=False,
        description="Group conversations that open with the same untrained tokens (an agent profile's "
        "instruction, schema and 1-shot) and run each group's opening once per micro batch (train/prefix.py).",
    )
    lora_rank: int = Field(
        default=0,
        ge=0,
        description="0 trains every weight; > 0 trains LoRA adapters on lora_targets, merged into the "
        "weights on save, so the checkpoint is a plain one either way.",
    )
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    save_adapter: bool = Field(
        default=False, description="Also write the adapter alone (PEFT format) to <output_dir>/adapter."
    )
    init_adapter: str | None = Field(
        default=None,
        description="Continue training this PEFT adapter instead of new LoRA weights (its rank, "
        "alpha and targets are its own, so the delta stays one size).",
    )
    freeze_embeddings: bool = Field(
        default=False,
        description="Freeze the input embedding (and the output layer tied to it): for a small model "
        "with a large vocabulary most weights are there, and the body is enough to learn a format.",
    )
    attn_implementation: str = Field(
        default="auto",
        description="'auto': FlashAttention 2 on a GPU with flash-attn installed, else PyTorch's sdpa; "
        "any transformers name is accepted.",
    )
    max_seq_len: int = Field(
        default=2048, ge=1, description="Longer conversations are dropped and counted, never cut mid-turn."
    )
    epochs: float = Field(default=3.0, ge=0)
    max_steps: int = Field(default=0, ge=0, description="Optimizer steps; 0: derived from epochs.")
    batch_size: int = Field(default=4, ge=1, description="Micro batch per rank.")
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=2e-5, gt=0, description="Peak learning rate.")
    warmup_ratio: float = Field(default=0.02, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = Field(default=0, description="Seeds the data order and the new weights.")
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(
        default=0,
        ge=0,
        description="Save DeepSpeed state every N optimizer steps under <output_dir>/resume (0: "
        "never); a run started again with the same output_dir continues from there.",
    )
    deepspeed: str = Field(
        default="ds_zero2.json", description="A DeepSpeed config in train/configs/, or a path."
    )
    eta: float | None = Field(default=None, description="The mix's agent share, recorded in the model card.")
    mix_report: str = Field(default="", description="A file whose text goes into the model card.")

    def require_inputs(self) -> None:
        """What a run needs beyond a preset: a base, an output, data that exists, and settings
        that agree with each other."""
        if not self.base_model:
            raise ConfigError("base_model is required: a checkpoint directory or a hub id")
        if not self.output_dir:
            raise ConfigError("output_dir is required")
        if not self.data:
            raise ConfigError("data is required: one or more JSONL files of conversations")
        for path in self.data:
            if not Path(path).is_file():
                raise ConfigError(f"data file {path} does not exist")
        get_template(self.template)
        if self.lora_rank and not self.lora_targets:
            raise ConfigError("lora_rank > 0 needs lora_targets")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("set max_steps or epochs to a positive number")
        if self.init_adapter and not (Path(self.init_adapter) / "adapter_config.json").is_file():
            raise ConfigError(
                f"init_adapter {self.init_adapter!r} is not a PEFT adapter directory (no adapter_config.json)"
            )
        if self.init_adapter and not self.lora_rank:
            raise ConfigError("init_adapter needs lora_rank > 0: it continues a LoRA adapter")
        if self.save_adapter and not self.lora_rank:
            raise ConfigError("save_adapter needs lora_rank > 0: full fine-tuning has no adapter to save")


def load_config(path: str | None, overrides: dict[str, Any], model: type[C] = SFTConfig) -> C:  # type: ignore[assignment]
    """A preset YAML (by name in train/configs/ or by path) with overrides on top, as `model`."""
    values: dict[str, Any] = {}
    if path:
        preset = Path(path)
        if not preset.is_file():
            preset = Path(str(resources.files("agentlm.train") / "configs" / f"{path}.yaml"))
        if not preset.is_file():
            raise ConfigError(f"no preset {path!r}: pass a YAML file or a name in train/configs/")
        values = yaml.safe_load(preset.read_text()) or {}
        values.setdefault("preset", preset.stem)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(model.model_fields)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(model.model_fields)}")
    try:
        return model(**values)  # YAML reads 1.5e-3 (no dot) as a string: pydantic reads it as a number
    except ValidationError as e:
        raise ConfigError(
            "; ".join(
                f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err['input']!r})" for err in e.errors()
            )
        ) from None


C = TypeVar("C", bound=SFTConfig)


class SFTRecipe:
    def __init__(self, cfg: SFTConfig):
        cfg.require_inputs()
        self.cfg = cfg
        self.template = get_template(cfg.template)
        self.dropped_too_long = 0
        self.dropped_no_target = 0

    # ---- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        import deepspeed
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = self.cfg
        # 1. Distributed: a single process needs no launcher; gloo because there may be no GPU.
        for key, value in (
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
        ):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend)
        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        # 2. Tokenizer with the template the checkpoint will be served with.
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
        self.tokenizer.chat_template = self.template.jinja
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

        # 3. Data: render, tokenize, mask; drop what cannot fit instead of cutting turns.
        self.examples = self._load_examples()
        if not self.examples:
            raise ConfigError("no training examples left after dropping over-long and target-less ones")
        per_step = cfg.batch_size * cfg.grad_accum * self.world_size
        self.total_steps = cfg.max_steps or max(1, math.ceil(self.units_per_epoch() * cfg.epochs / per_step))

        # 4. Model (fp32 on the CPU; bf16 where a GPU supports it) and the DeepSpeed engine.
        dtype = (
            torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        )
        model = AutoModelForCausalLM.from_pretrained(
            cfg.base_model, dtype=dtype, attn_implementation=_attention(cfg.attn_implementation)
        )
        model.config.use_cache = False
        if cfg.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        if cfg.lora_rank and cfg.init_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
            log.info("continuing the LoRA adapter in %s", cfg.init_adapter)
        elif cfg.lora_rank:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_targets,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            log.info(
                "LoRA rank %d on %s: %d trainable parameters", cfg.lora_rank, cfg.lora_targets, trainable
            )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = math.ceil(self.total_steps * cfg.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _cosine_with_warmup(warmup, self.total_steps)
        )
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self._deepspeed_config(dtype)
        )
        self.device = self.engine.device

    def _load_examples(self) -> list[TokenizedExample]:
        cfg = self.cfg
        examples = []
        for path in cfg.data:
            for conv in read_jsonl(path):
                ex = tokenize_conversation(self.tokenizer, self.template, conv, cfg.honour_loss_flag)
                if len(ex.input_ids) > cfg.max_seq_len:
                    self.dropped_too_long += 1
                elif ex.trainable_tokens == 0:
                    self.dropped_no_target += 1
                else:
                    examples.append(ex)
        log.info(
            "%d examples; dropped %d longer than %d tokens and %d with no assistant turn to learn",
            len(examples), self.dropped_too_long, cfg.max_seq_len, self.dropped_no_target,
        )  # fmt: skip
        return examples

    def units_per_epoch(self) -> int:
        """What batch_size counts in one epoch on all ranks."""
        return units_per_epoch(self.examples, self.cfg, self.world_size)

    def _deepspeed_config(self, dtype) -> dict[str, Any]:
        import torch

        path = Path(self.cfg.deepspeed)
        if not path.is_file():
            path = Path(str(resources.files("agentlm.train") / "configs" / self.cfg.deepspeed))
        ds = json.loads(path.read_text())
        ds["train_micro_batch_size_per_gpu"] = self.cfg.batch_size
        ds["gradient_accumulation_steps"] = self.cfg.grad_accum
        ds["bf16"] = {"enabled": dtype == torch.bfloat16}
        return ds

    # ---- train -----------------------------------------------------------------------------

    desc = "training"  # the progress bar's label

    def train(self) -> float:
        import torch.distributed as dist
        from tqdm import tqdm

        cfg = self.cfg
        self.before_training()
        batches = self.micro_batches()
        self.engine.train()
        done, recent = self._resume()
        for _ in range(done * cfg.grad_accum):  # the data order is fixed by the seed: skip what was seen
            next(batches)
        progress = tqdm(
            total=self.total_steps, initial=done, desc=self.desc, disable=self.rank != 0, mininterval=2.0
        )
        started = time.perf_counter()
        for step in range(done + 1, self.total_steps + 1):
            step_loss, figures = self.optimizer_step([next(batches) for _ in range(cfg.grad_accum)])
            dist.all_reduce(step_loss)
            recent = (recent + [step_loss.item()])[-cfg.log_every :]
            progress.update(1)
            progress.set_postfix(loss=f"{recent[-1]:.4f}", refresh=False)
            if self.rank == 0 and (step % cfg.log_every == 0 or step == self.total_steps):
                lr = self.engine.get_lr()[0]
                log.info("step %d/%d loss %.4f lr %.2e%s", step, self.total_steps,
                         sum(recent) / len(recent), lr, figures)  # fmt: skip
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < self.total_steps:
                save_resume_state(self.engine, self.resume_dir, step, recent, self.rank)
        progress.close()
        self.train_seconds = time.perf_counter() - started
        self.final_loss = sum(recent) / len(recent)
        return self.final_loss

    def before_training(self) -> None:
        """Work before the first step (and before resuming): none for SFT."""

    def micro_batches(self) -> Iterator[Any]:
        """This rank's endless micro batches, in the seed's order."""
        pad = self.tokenizer.pad_token_id
        return micro_batch_stream(self.examples, self.cfg, self.rank, self.world_size, pad, self.device)

    def optimizer_step(self, micro_batches: list[Any]) -> tuple[Any, str]:
        """Backward over the micro batches, one optimizer step; this rank's loss, and figures for the log."""
        import torch
        import torch.distributed as dist

        # The step's loss is the mean over its trainable tokens on all ranks, so a long
        # conversation weighs more than a short one whatever the batching. HF's default (a mean
        # per micro batch, averaged again over accumulation and ranks) would weigh them equally.
        n_tokens = sum((b.labels[:, 1:] != IGNORE_INDEX).sum() for b in micro_batches)
        dist.all_reduce(n_tokens)
        step_loss = torch.zeros((), device=self.device)
        for batch in micro_batches:
            loss = causal_lm_loss(self.engine, batch, n_tokens)
            # DeepSpeed averages gradients over ranks; the per-rank sums must add up instead.
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            self.engine.step()
            step_loss += loss.detach()
        return step_loss, ""

    # ---- resume ----------------------------------------------------------------------------

    @property
    def resume_dir(self) -> Path:
        return Path(self.cfg.output_dir) / "resume"

    def _resume(self) -> tuple[int, list[float]]:
        """(steps already done, recent losses) from <output_dir>/resume, or (0, []) for a new run."""
        if not (self.resume_dir / "latest").is_file():
            return 0, []
        _, state = self.engine.load_checkpoint(str(self.resume_dir))
        if not state or state.get("step", 0) >= self.total_steps:
            raise ConfigError(
                f"{self.resume_dir} does not belong to this run (step {state and state.get('step')} of "
                f"{self.total_steps}); remove it to start over"
            )
        if self.rank == 0:
            log.info("resuming from step %d (%s)", state["step"], self.resume_dir)
        return state["step"], list(state.get("recent", []))

    # ---- save ------------------------------------------------------------------------------

    def save(self) -> Path:
        """A plain Hugging Face checkpoint (no DeepSpeed state) that transformers and vLLM load as is."""
        cfg = self.cfg
        out = Path(cfg.output_dir)
        lora, adapter = bool(cfg.lora_rank), cfg.save_adapter
        if not save_pretrained(
            self.engine, self.tokenizer, self.template, out, lora=lora, save_adapter=adapter, rank=self.rank
        ):
            return out  # not rank 0
        card = model_card(
            cfg, examples=len(self.examples), dropped_too_long=self.dropped_too_long,
            dropped_no_target=self.dropped_no_target, total_steps=self.total_steps, final_loss=self.final_loss,
            train_seconds=self.train_seconds, world_size=self.world_size,
        )  # fmt: skip
        (out / "README.md").write_text(card)
        log.info("saved checkpoint to %s", out)
        if self.resume_dir.exists():
            shutil.rmtree(self.resume_dir, ignore_errors=True)  # the run finished: nothing to resume
        return out

    def cleanup(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _attention(choice: str) -> str:
    if choice != "auto":
        return choice
    import importlib.util

    import torch

    gpu = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if gpu else "sdpa"


def _cosine_with_warmup(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


# The settings `python -m agentlm.train.sft` takes as options (every other one: --set key=value).
COMMAND_LINE = ("data", "base_model", "output_dir", "eta", "mix_report", "max_steps", "epochs", "lr", "seed")


# The options every recipe's command line has beside its settings model's.
PresetOption = Annotated[str | None, typer.Option(help="A preset (train/configs/NAME.yaml) or a YAML file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Any setting as KEY=VALUE (a YAML value); repeatable.")
]
LocalRankOption = Annotated[int | None, typer.Option("--local_rank", hidden=True)]  # the launcher's


def run_recipe(
    recipe_type: type[SFTRecipe], config_type: type[SFTConfig], config: str | None,
    sets: list[str] | None, options: dict[str, Any], name: str,
) -> None:  # fmt: skip
    """Load the config, set up, train, save and clean up: a recipe's whole command."""
    _log_the_run()
    try:
        recipe = recipe_type(load_config(config, {**options, **_parse_set(sets or [])}, config_type))
    except ConfigError as e:
        raise SystemExit(f"{name}: {e}") from None
    try:
        recipe.setup()
    except (ConfigError, DataFormatError) as e:  # the data: a bad record, or nothing left to train on
        recipe.cleanup()
        raise SystemExit(f"{name}: {e}") from None
    try:
        final = recipe.train()
        recipe.save()
        log.info("final_loss=%.4f", final)
    finally:
        recipe.cleanup()


@options_from(SFTConfig, COMMAND_LINE)
def run(
    config: PresetOption = None, set_: SetOption = None, local_rank: LocalRankOption = None, **options: Any
) -> None:
    """Fine-tune on conversations (loss on the model's own turns) and write a Hugging Face checkpoint."""
    run_recipe(SFTRecipe, SFTConfig, config, set_, options, "agentlm train")


def _log_the_run() -> None:
    """The recipe's own lines (steps, losses, checkpoints: what scripts and people read) on stdout
    as they are; everything else, the libraries' logs, on stderr with time and source."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_log = logging.getLogger("agentlm.train")
    if not any(getattr(h, "agentlm_run_log", False) for h in run_log.handlers):
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(logging.Formatter("%(message)s"))
        out.agentlm_run_log = True  # type: ignore[attr-defined]
        run_log.addHandler(out)
    run_log.propagate = False


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "python -m agentlm.train.sft")


if __name__ == "__main__":
    main()

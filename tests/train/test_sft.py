"""The SFT recipe with real DeepSpeed (ZeRO-2, gloo on the CPU) on a tiny model built here."""

import json
import re
import subprocess
import sys

import pytest
from tiny import build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentlm.data.formats import Conversation, Turn, write_jsonl
from agentlm.train.sft import ConfigError, SFTRecipe, load_config

FACTS = [(f"What is the code for item {i}?", f"The code for item {i} is {i * 7 + 3}.") for i in range(12)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("sft")
    convs = [
        Conversation(
            f"c{i}",
            [
                Turn("user", "Instruction."),
                Turn("assistant", "Ok.", False),
                Turn("user", q),
                Turn("assistant", a, True),
            ],
        )
        for i, (q, a) in enumerate(FACTS)
    ]
    long = Conversation("long", [Turn("user", "word " * 3000), Turn("assistant", "x")])
    data = work / "data.jsonl"
    write_jsonl(data, [*convs, long])
    base = build_tiny_model(work / "base", [t.content for c in convs for t in c.turns] * 5, vocab_size=600)
    return work, data, base


def test_training_lowers_the_loss_and_writes_a_servable_checkpoint(setup):
    work, data, base = setup
    out = work / "ckpt"
    result = subprocess.run(
        [sys.executable, "-m", "agentlm.train.sft", "--config", "tiny", "--data", str(data), "--base-model", str(base),
         "--output-dir", str(out), "--max-steps", "40", "--eta", "1.0", "--set", "batch_size=4", "max_seq_len=512", "log_every=5"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"^step \d+/40 loss ([0-9.]+)", result.stdout, re.M)]
    assert len(losses) == 8 and losses[-1] < losses[0] * 0.5, losses
    assert "dropped 1 longer than 512 tokens" in result.stdout  # the run log (train/sft.py _log_the_run)

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "[INST]" in tokenizer.chat_template
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.pt"))
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("</s>")
    card = (out / "README.md").read_text()
    assert "eta = 1.0" in card and "11 examples trained" not in card and "12 examples trained" in card
    assert "final loss" in card and "lr: 0.003" in card
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


def test_recipe_masks_the_prompt_and_the_ok_turn(setup):
    work, data, base = setup
    recipe = SFTRecipe(
        load_config(
            "tiny",
            {"data": [str(data)], "base_model": str(base), "output_dir": str(work / "x"), "max_seq_len": 512},
        )
    )
    recipe.tokenizer = AutoTokenizer.from_pretrained(base)
    examples = recipe._load_examples()
    assert recipe.dropped_too_long == 1 and len(examples) == 12
    ex = examples[0]
    learnt = recipe.tokenizer.decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != -100]
    )
    assert learnt.strip() == f"{FACTS[0][1]} </s>"

    # Without the flag the recipe trains on every assistant turn, as FastChat does: "Ok." too.
    recipe.cfg.honour_loss_flag = False
    ex = recipe._load_examples()[0]
    learnt = recipe.tokenizer.decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != -100]
    )
    assert learnt.split() == ["Ok.", "</s>", *FACTS[0][1].split(), "</s>"]


def _train_losses(data, base, out, batch_size, grad_accum, *extra):
    result = subprocess.run(
        [sys.executable, "-m", "agentlm.train.sft", "--config", "tiny", "--data", str(data), "--base-model", str(base),
         "--output-dir", str(out), "--max-steps", "3", "--set", f"batch_size={batch_size}", f"grad_accum={grad_accum}",
         "log_every=1", "lr=0.001", "warmup_ratio=0", *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return [float(x) for x in re.findall(r"^step \d+/3 loss ([0-9.]+)", result.stdout, re.M)]


def test_loss_is_a_mean_over_tokens_whatever_the_batching(setup, tmp_path):
    """A short and a long answer in one batch of 2, or as 2 accumulated micro batches of 1, train alike.

    A mean per micro batch would weigh the 3-token answer like the 60-token one in the second case.
    """
    work, _, base = setup
    data = tmp_path / "two.jsonl"
    long_answer = " ".join(a for _, a in FACTS)
    write_jsonl(
        data,
        [
            Conversation("short", [Turn("user", FACTS[0][0]), Turn("assistant", "Yes.")]),
            Conversation("long", [Turn("user", FACTS[1][0]), Turn("assistant", long_answer)]),
        ],
    )
    together = _train_losses(data, base, tmp_path / "a", batch_size=2, grad_accum=1)
    accumulated = _train_losses(data, base, tmp_path / "b", batch_size=1, grad_accum=2)
    assert len(together) == 3 and together == pytest.approx(accumulated, rel=1e-4)


def test_packed_rows_train_exactly_like_padded_conversations(setup, tmp_path):
    """Packing only removes padding: one row holding both conversations trains like a batch of 2."""
    work, _, base = setup
    data = tmp_path / "two.jsonl"
    write_jsonl(
        data,
        [
            Conversation("short", [Turn("user", FACTS[0][0]), Turn("assistant", "Yes.")]),
            Conversation(
                "long", [Turn("user", FACTS[1][0]), Turn("assistant", " ".join(a for _, a in FACTS))]
            ),
        ],
    )
    padded = _train_losses(data, base, tmp_path / "padded", 2, 1)
    packed = _train_losses(data, base, tmp_path / "packed", 1, 1, "pack=true")
    assert len(padded) == 3 and packed == pytest.approx(padded, rel=1e-4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"base_model": ""}, "base_model is required"),
        ({"data": ["/nope.jsonl"]}, "does not exist"),
        ({"lr": 0}, "lr: Input should be greater than 0"),
        ({"template": "chatml"}, "unknown chat template"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"warmup_ratio": 1.5}, r"warmup_ratio: Input should be less than 1 \(got 1.5\)"),
        ({"max_steps": 0, "epochs": 0}, "set max_steps or epochs"),
    ],
)
def test_bad_config_values_are_named(setup, overrides, message):
    work, data, base = setup
    values = {"data": [str(data)], "base_model": str(base), "output_dir": str(work / "x"), **overrides}
    with pytest.raises((ConfigError, ValueError), match=message):
        SFTRecipe(load_config("tiny", values))


def test_unknown_keys_and_presets_are_rejected():
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config("tiny", {"learning_rate": 1})
    with pytest.raises(ConfigError, match="no preset"):
        load_config("huge", {})


def test_lora_trains_adapters_and_saves_a_plain_merged_checkpoint(setup, tmp_path):
    import torch

    _, data, base = setup
    out = tmp_path / "lora"
    losses = _train_losses(data, base, out, 4, 1, "lora_rank=8", "lora_alpha=16", "lr=0.01")
    assert len(losses) == 3 and losses[-1] < losses[0]
    tuned = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(base)
    names = {n for n, _ in tuned.named_parameters()}
    assert not any("lora" in n for n in names)  # merged: transformers and vLLM load it as is
    changed = {
        n.split(".")[-2]
        for n, p in tuned.named_parameters()
        if not torch.equal(p, dict(original.named_parameters())[n])
    }
    assert changed == {"q_proj", "k_proj", "v_proj", "o_proj"}  # only the adapted projections moved


def test_zero3_checkpoints_are_gathered_into_a_plain_model(setup, tmp_path):
    """ZeRO-3 partitions the weights; the saved checkpoint must hold all of them, not placeholders."""
    _, data, base = setup
    out = tmp_path / "z3"
    losses = _train_losses(data, base, out, 4, 1, "deepspeed=ds_zero3.json", "lr=0.01")
    assert len(losses) == 3
    import torch

    tuned = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    original = dict(AutoModelForCausalLM.from_pretrained(base).named_parameters())
    assert tuned.keys() == original.keys()
    assert all(tuned[n].shape == original[n].shape and tuned[n].numel() > 0 for n in tuned)
    assert any(not torch.equal(tuned[n], original[n]) for n in tuned)  # trained, not the base re-saved


@pytest.mark.parametrize("preset", ["llama2-7b", "llama2-13b", "llama2-70b"])
def test_the_papers_presets_load_with_its_hyperparameters(preset):
    cfg = load_config(preset, {"base_model": "x", "output_dir": "y"})
    expected_lr = {"llama2-7b": 5e-5, "llama2-13b": 5e-5, "llama2-70b": 1e-5}[preset]
    assert (cfg.lr, cfg.max_seq_len, cfg.template, cfg.warmup_ratio) == (expected_lr, 4096, "llama-2", 0.02)
    assert cfg.batch_size * cfg.grad_accum * 8 == 64  # global batch 64 on 8 GPUs
    assert cfg.deepspeed == ("ds_zero3_offload.json" if preset == "llama2-70b" else "ds_zero3.json")


def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_as_if_never_stopped(setup, tmp_path):
    import os
    import signal

    _, data, base = setup
    cmd = [
        sys.executable, "-m", "agentlm.train.sft", "--config", "tiny", "--data", str(data), "--base-model", str(base),
        "--max-steps", "6", "--set", "batch_size=4", "log_every=1", "lr=0.003", "warmup_ratio=0", "checkpoint_every=2",
    ]  # fmt: skip
    whole = subprocess.run(
        [*cmd, "--output-dir", str(tmp_path / "whole")], capture_output=True, text=True, timeout=300
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = re.findall(r"^step (\d)/6 loss ([0-9.]+)", whole.stdout, re.M)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*cmd, "--output-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    for line in proc.stdout:
        if line.startswith("checkpoint at step 4"):
            os.killpg(proc.pid, signal.SIGKILL)  # as a crash would: no cleanup at all
            break
    proc.wait(timeout=60)
    assert not (out / "config.json").exists() and (out / "resume" / "latest").read_text().strip() == "step4"
    resumed = subprocess.run([*cmd, "--output-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step 4" in resumed.stdout
    after = re.findall(r"^step (\d)/6 loss ([0-9.]+)", resumed.stdout, re.M)
    assert [s for s, _ in after] == ["5", "6"]
    assert [float(x) for _, x in after] == pytest.approx(
        [float(x) for s, x in expected if s in "56"], rel=1e-4
    )
    assert (out / "config.json").is_file() and not (out / "resume").exists()


def test_frozen_embeddings_stay_the_base_ones_while_the_body_trains(setup, tmp_path):
    import torch

    _, data, base = setup
    out = tmp_path / "frozen"
    losses = _train_losses(data, base, out, 4, 1, "freeze_embeddings=true", "lr=0.01")
    assert len(losses) == 3 and losses[-1] < losses[0]
    tuned = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    original = dict(AutoModelForCausalLM.from_pretrained(base).named_parameters())
    embedding = next(n for n in tuned if "embed_tokens" in n)
    assert torch.equal(tuned[embedding], original[embedding])
    assert any(not torch.equal(tuned[n], original[n]) for n in tuned if "layers." in n)


def test_a_packed_epoch_counts_rows_not_conversations(setup, tmp_path):
    """12 short conversations fill one 2048-token row: one epoch is one step of one row, not 12."""
    _, data, base = setup
    result = subprocess.run(
        [sys.executable, "-m", "agentlm.train.sft", "--config", "tiny", "--data", str(data), "--base-model", str(base),
         "--output-dir", str(tmp_path / "out"), "--set", "epochs=1", "max_steps=0", "pack=true", "batch_size=1",
         "grad_accum=1", "log_every=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.findall(r"^step (\d+)/(\d+) ", result.stdout, re.M) == [("1", "1")]


def test_shared_prefixes_train_like_whole_conversations_and_the_adapter_is_saved(setup, tmp_path):
    """Four conversations with one long opening: the first step's loss is the padded batch's
    exactly (same logits); later steps stay close (the gradient skips the cached opening); the
    adapter alone is written beside the merged checkpoint and reproduces it."""
    import torch
    from peft import PeftModel

    _, _, base = setup
    opening = "Instruction: " + " ".join(f"rule {i} applies." for i in range(120))
    data = tmp_path / "shared.jsonl"
    write_jsonl(
        data,
        [
            Conversation(f"s{i}", [Turn("user", opening), Turn("assistant", "Ok.", False), Turn("user", q), Turn("assistant", a, True)])
            for i, (q, a) in enumerate(FACTS[:4])
        ],
    )  # fmt: skip
    lora = ("lora_rank=8", "lora_alpha=16", "max_seq_len=2048")
    padded = _train_losses(data, base, tmp_path / "padded", 4, 1, *lora)
    shared = _train_losses(
        data, base, tmp_path / "shared", 4, 1, *lora, "share_prefixes=true", "save_adapter=true"
    )
    assert len(shared) == 3 and shared[0] == pytest.approx(padded[0], rel=1e-5)
    assert shared == pytest.approx(padded, rel=0.1) and shared[-1] < shared[0]

    adapter = tmp_path / "shared" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "shared").eval()
    applied = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, applied(ids).logits, atol=1e-4)

    # A second round continues the saved adapter: it starts where the first one ended.
    more = _train_losses(
        data, base, tmp_path / "more", 4, 1, *lora, "share_prefixes=true", f"init_adapter={adapter}"
    )
    assert more[0] < shared[0] and more[0] == pytest.approx(shared[-1], rel=0.5)


def test_numbers_written_as_yaml_strings_are_read_as_numbers():
    cfg = load_config(
        "tiny", {"base_model": "x", "output_dir": "y", "data": [__file__], "lr": "1.5e-3", "epochs": "2"}
    )
    assert cfg.lr == 1.5e-3 and cfg.epochs == 2
    with pytest.raises(
        ConfigError,
        match="lr: Input should be a valid number, unable to parse string as a number \\(got 'fast'\\)",
    ):
        load_config("tiny", {"base_model": "x", "output_dir": "y", "data": [__file__], "lr": "fast"})


def test_init_adapter_must_be_a_peft_adapter(tmp_path):
    with pytest.raises(ConfigError, match="not a PEFT adapter directory"):
        SFTRecipe(
            load_config(
                "tiny",
                {
                    "base_model": "x",
                    "output_dir": "y",
                    "data": [__file__],
                    "lora_rank": 8,
                    "init_adapter": str(tmp_path),
                },
            )
        )


def test_save_adapter_needs_lora():
    with pytest.raises(ConfigError, match="save_adapter needs lora_rank"):
        SFTRecipe(
            load_config(
                "tiny", {"base_model": "x", "output_dir": "y", "data": [__file__], "save_adapter": True}
            )
        )

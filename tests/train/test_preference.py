"""Preference tuning (KTO on thumbs, DPO on corrections) with real DeepSpeed on a tiny model built here."""

import json
import math
import re
import subprocess
import sys

import pytest
import torch
from tiny import build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentlm.data.formats import Conversation, DataFormatError, Turn, write_jsonl
from agentlm.data.masks import tokenize_conversation
from agentlm.data.templates import get_template
from agentlm.train.packing import padded_batch
from agentlm.train.preference import (
    PreferenceConfig,
    PreferenceExample,
    _rejected,
    preference_loss,
    sequence_logps,
)

ITEMS = [(f"What is the code for item {i}?", i * 7 + 3) for i in range(12)]


def _conv(i: int, question: str, answer: str, **extra) -> Conversation:
    turns = [Turn("user", "Instruction."), Turn("assistant", "Ok.", False), Turn("user", question)]
    return Conversation(f"c{i}", [*turns, Turn("assistant", answer, True)], extra=extra)


def _right(code: int) -> str:
    return f"The code is {code}."


def _wrong(code: int) -> str:
    return f"The code is {code + 1}."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = tmp_path_factory.mktemp("preference")
    texts = [t for q, c in ITEMS for t in ("Instruction.", "Ok.", q, _right(c), _wrong(c))]
    return work, build_tiny_model(work / "base", texts * 5, vocab_size=600)


def _logps(checkpoint, convs: list[Conversation]) -> list[float]:
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    template = get_template("llama-2")
    seqs = [tokenize_conversation(tokenizer, template, c) for c in convs]
    with torch.no_grad():
        return sequence_logps(model, padded_batch(seqs, tokenizer.pad_token_id)).tolist()


def _train(tiny, data, out, *sets: str) -> str:
    work, base = tiny
    result = subprocess.run(
        [sys.executable, "-m", "agentlm.train.preference", "--config", "tiny", "--data", str(data),
         "--base-model", str(base), "--output-dir", str(out), "--max-steps", "12", "--lr", "3e-3",
         "--set", "batch_size=4", "max_seq_len=512", "log_every=3", *sets],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_dpo_on_corrections_prefers_the_corrected_reply(tiny, tmp_path):
    work, base = tiny
    pairs = [_conv(i, q, _right(c), rejected=_wrong(c)) for i, (q, c) in enumerate(ITEMS)]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    log = _train(tiny, tmp_path / "pairs.jsonl", tmp_path / "out")
    assert "12 preference examples: 12 pairs, 0 liked, 0 disliked" in log
    losses = [float(x) for x in re.findall(r"^step \d+/12 loss ([0-9.]+)", log, re.M)]
    assert len(losses) == 4 and losses[-1] < losses[0] and abs(losses[0] - math.log(2)) < 0.05, losses
    assert "pairs right" in log

    chosen, rejected = pairs, [_rejected(p) for p in pairs]
    before = [c - r for c, r in zip(_logps(base, chosen), _logps(base, rejected), strict=True)]
    after = [
        c - r
        for c, r in zip(_logps(tmp_path / "out", chosen), _logps(tmp_path / "out", rejected), strict=True)
    ]
    gained = sum(a > b for a, b in zip(after, before, strict=True))
    assert gained >= 10 and sum(after) > sum(before) + 1, (before, after)


def test_kto_on_thumbs_raises_liked_replies_and_lowers_disliked_ones(tiny, tmp_path):
    work, base = tiny
    liked = [_conv(i, q, _right(c), label=True) for i, (q, c) in enumerate(ITEMS[:6])]
    disliked = [_conv(i, q, _wrong(c), label=False) for i, (q, c) in enumerate(ITEMS[6:], start=6)]
    write_jsonl(tmp_path / "thumbs.jsonl", [*liked, *disliked])
    log = _train(tiny, tmp_path / "thumbs.jsonl", tmp_path / "out")
    assert "12 preference examples: 0 pairs, 6 liked, 6 disliked" in log and "kto reward" in log

    out = tmp_path / "out"
    up = [a - b for a, b in zip(_logps(out, liked), _logps(base, liked), strict=True)]
    down = [a - b for a, b in zip(_logps(out, disliked), _logps(base, disliked), strict=True)]
    assert sum(up) / len(up) > 0 and sum(up) / len(up) > sum(down) / len(down) + 0.5, (up, down)
    # For the disliked questions, the disliked reply lost ground to the right one, never shown.
    right = [_conv(i, q, _right(c)) for i, (q, c) in enumerate(ITEMS[6:], start=6)]
    before = [w - r for w, r in zip(_logps(base, disliked), _logps(base, right), strict=True)]
    after = [w - r for w, r in zip(_logps(out, disliked), _logps(out, right), strict=True)]
    assert sum(after) < sum(before), (before, after)


def test_losses_are_dpo_and_kto_on_known_numbers():
    cfg = PreferenceConfig(beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    pair = PreferenceExample([None, None], None, reference=[-10.0, -10.0])  # type: ignore[list-item]
    liked = PreferenceExample([None], True, reference=[-5.0])  # type: ignore[list-item]
    disliked = PreferenceExample([None], False, reference=[-5.0])  # type: ignore[list-item]
    # Pair: chosen gained 1, rejected lost 1: margin 2. KTO: liked gained 0.5, disliked gained 0.5.
    policy = torch.tensor([-9.0, -11.0, -4.5, -4.5])
    loss, figures = preference_loss([pair, liked, disliked], policy, cfg)
    z0 = (1 + -1 + 0.5 + 0.5) / 4  # the batch's mean reward
    dpo = -math.log(1 / (1 + math.exp(-0.5 * 2)))
    kto = (1 - 1 / (1 + math.exp(-0.5 * (0.5 - z0)))) + 2 * (1 - 1 / (1 + math.exp(-0.5 * (z0 - 0.5))))
    assert loss.item() == pytest.approx(dpo + kto, rel=1e-5)
    assert figures["pairs_right"] == 1 and figures["pairs"] == 1 and figures["kto"] == 2
    # A policy that has drifted down everywhere: the KL estimate is clipped at 0.
    policy = torch.tensor([-12.0, -12.0, -6.0, -6.0])
    loss, _ = preference_loss([pair, liked, disliked], policy, cfg)
    kto = (1 - 1 / (1 + math.exp(-0.5 * -1))) + 2 * (1 - 1 / (1 + math.exp(-0.5 * 1)))
    assert loss.item() == pytest.approx(-math.log(0.5) + kto, rel=1e-5)


def test_records_without_a_label_or_rejected_reply_are_named(tiny, tmp_path):
    work, base = tiny
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_conv(0, "q", "a").to_record()) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "agentlm.train.preference", "--config", "tiny", "--data", str(bad),
         "--base-model", str(base), "--output-dir", str(tmp_path / "out"), "--max-steps", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"{bad} record 1" in result.stderr and "'label'" in result.stderr and "'rejected'" in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(DataFormatError, match="non-empty string"):
        from agentlm.data.preferences import check_preference

        check_preference(_conv(0, "q", "a", rejected=""), "here")

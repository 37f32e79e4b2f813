"""Prompt lookup: what it guesses, and guesses trimmed to step sizes worth their cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlm.serve.engines.gguf import checkpoint_to_gguf
from agentlm.serve.engines.llamacpp import LlamaCpp
from agentlm.serve.engines.lookup import StepCosts, lookup_draft

# Milliseconds of a step of 1..12 rows of Gemma 3 270M on the 2-core development machine: llama.cpp's
# AVX-512 kernels work in tiles of 4 rows, so 8 rows cost less than 5, 6 or 7.
MEASURED = StepCosts(tuple(ms / 1000 for ms in (16, 30, 36, 39, 57, 62, 67, 54, 72, 77, 83, 71)))


def test_prompt_lookup_guesses_what_follows_the_latest_earlier_occurrence() -> None:
    context = [1, 2, 3, 4, 5, 9, 1, 2, 3, 4, 6, 7, 8, 1, 2, 3]
    assert lookup_draft(context, 3) == [4, 6, 7]  # the latest "1 2 3" went on "4 6 7"
    assert lookup_draft([*context, 4, 5], 2) == [9, 1]  # a longer suffix ("1 2 3 4 5") wins
    assert lookup_draft([5, 6, 7, 8], 4) == []  # nothing seen twice
    assert lookup_draft([1, 2, 1, 2], 4) == []  # shorter than the 3 tokens a guess needs


def test_a_step_size_is_worth_its_cost_when_no_larger_one_is_clearly_cheaper() -> None:
    assert [rows for rows in range(1, 13) if MEASURED.worth(rows)] == [1, 2, 3, 4, 8, 9, 12]
    assert MEASURED.worth(13)  # beyond what was measured
    flat = StepCosts((0.0010, 0.0011, 0.0009, 0.0012))  # a tiny model: timer noise only
    assert all(flat.worth(rows) for rows in range(1, 5))


def test_guesses_are_trimmed_from_the_longest_tails_to_a_size_worth_its_cost() -> None:
    seven, five = list(range(100, 107)), list(range(200, 205))
    assert MEASURED.fit([seven]) == [seven]  # 8 rows
    assert MEASURED.fit([five]) == [five[:3]]  # 6 rows cost more than 8: 4 rows
    # Beside others: 5 sequences and 3 guesses make 8 rows; 5 and 2 make 7, which 8 undercuts, and
    # so does 5 and 6 rows: no guesses at all.
    assert MEASURED.fit([five[:3], [], [], [], []]) == [five[:3], [], [], [], []]
    assert MEASURED.fit([five[:2], [], [], [], []]) == [[], [], [], [], []]
    # 2 sequences with 5 and 3 guesses (10 rows, which 12 undercuts): 9 rows, the longer draft trimmed.
    assert MEASURED.fit([five, five[:3]]) == [five[:4], five[:3]]
    assert MEASURED.fit([[], []]) == [[], []]


@pytest.fixture
def tiny_llm(tiny_checkpoint: Path, tmp_path: Path):
    llm = LlamaCpp(checkpoint_to_gguf(tiny_checkpoint, tmp_path / "tiny.gguf"), n_ctx=512, n_seq=4)
    yield llm
    llm.close()


def test_step_costs_are_measured_once_per_model_and_machine_then_read(
    tiny_llm: LlamaCpp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    costs = StepCosts.cached(tiny_llm, 6, "model-a", tmp_path / "cache")
    assert len(costs.seconds) == 6 and all(s > 0 for s in costs.seconds)
    assert not tiny_llm.kv and not tiny_llm.cached  # the scratch sequence is gone

    def measure(*_args):
        raise AssertionError("measured again")

    monkeypatch.setattr(StepCosts, "measure", measure)
    assert StepCosts.cached(tiny_llm, 6, "model-a", tmp_path / "cache") == costs
    assert StepCosts.cached(tiny_llm, 4, "model-a", tmp_path / "cache") == costs  # fewer rows: known
    with pytest.raises(AssertionError, match="measured again"):  # another model file
        StepCosts.cached(tiny_llm, 6, "model-b", tmp_path / "cache")


def test_a_broken_cache_file_is_measured_over(tiny_llm: LlamaCpp, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "step-costs.json").write_text("{not json")
    costs = StepCosts.cached(tiny_llm, 3, "model-a", cache)
    assert len(costs.seconds) == 3
    assert StepCosts.cached(tiny_llm, 3, "model-a", cache) == costs  # and written back whole

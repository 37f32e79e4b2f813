"""llama.cpp under the embedded engine: converted checkpoints and adapters compute what transformers
and PEFT compute, and the KV cache's prefixes are reused, shared and evicted correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import build_tiny_gemma

from agentlm.serve.engines import EngineError
from agentlm.serve.engines.gguf import ConversionError, checkpoint_to_gguf, merge_lora
from agentlm.serve.engines.llamacpp import CacheFullError, LlamaCpp
from agentlm.serve.engines.weights import ensure_checkpoint_gguf, resolve_model

PROMPT = list(range(5, 60))


def _hf(checkpoint: Path, adapter: Path | None = None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    return model


def _last_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].numpy()


def _assert_follows(llm: LlamaCpp, model, prompt: list[int], steps: int = 12, atol: float = 2e-3) -> None:
    """llama.cpp's logits match the reference model's after the prompt and after each token fed."""
    first = llm.prefill([prompt])
    ids = list(prompt)
    logits = first.logits[0]
    for _ in range(steps):
        reference = _last_logits(model, ids)
        assert np.abs(logits - reference).max() < atol
        ids.append(int(reference.argmax()))
        logits = llm.step(first.seqs, [ids[-1]])[0]
    llm.release(first.seqs[0], keep=False)


@pytest.fixture(scope="module")
def tiny_llm(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    gguf = checkpoint_to_gguf(tiny_checkpoint, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    llm = LlamaCpp(gguf, n_ctx=1024, n_seq=6, threads=2)
    yield llm
    llm.close()


def test_a_llama_checkpoint_converts_to_the_same_model(tiny_checkpoint: Path, tiny_llm: LlamaCpp) -> None:
    assert tiny_llm.n_vocab == _hf(tiny_checkpoint).config.vocab_size
    _assert_follows(tiny_llm, _hf(tiny_checkpoint), PROMPT)


def test_a_gemma_checkpoint_converts_to_the_same_model_sliding_window_included(tmp_path: Path) -> None:
    # Six layers, one global (llama.cpp's Gemma 3 pattern), a 4-token window the prompt outgrows.
    model = build_tiny_gemma(
        num_hidden_layers=6,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        query_pre_attn_scalar=32,
    )
    model.save_pretrained(tmp_path / "gemma")
    llm = LlamaCpp(checkpoint_to_gguf(tmp_path / "gemma", tmp_path / "gemma.gguf"), n_ctx=512, n_seq=2)
    try:
        _assert_follows(llm, model, [3, 17, 40, 9, 100, 21, 8, 66, 12, 90])
    finally:
        llm.close()


def test_what_llama_cpp_cannot_run_the_same_way_is_refused_with_the_reason(tmp_path: Path) -> None:
    build_tiny_gemma(query_pre_attn_scalar=256).save_pretrained(tmp_path / "scaled")
    with pytest.raises(ConversionError, match="query_pre_attn_scalar is 256"):
        checkpoint_to_gguf(tmp_path / "scaled", tmp_path / "scaled.gguf")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ConversionError, match="convert_hf_to_gguf.py"):
        checkpoint_to_gguf(tmp_path / "gpt2", tmp_path / "gpt2.gguf")


def _adapter(checkpoint: Path, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(
        _hf(checkpoint), LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    )
    peft_model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("quantized", [False, True])
def test_a_merged_lora_adapter_computes_what_peft_computes(
    tiny_checkpoint: Path, tmp_path: Path, quantized: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentlm.serve.engines import gguf

    adapter = _adapter(tiny_checkpoint, tmp_path / "adapter")
    if quantized:  # a base in Q8_0, like the shipped default's quantized base: merged into Q8_0
        monkeypatch.setattr(gguf, "QUANTIZE_ABOVE", 0)
    base = checkpoint_to_gguf(tiny_checkpoint, tmp_path / "base.gguf")
    llm = LlamaCpp(merge_lora(base, adapter, tmp_path / "merged.gguf"), n_ctx=512, n_seq=2)
    try:
        with_adapter = _hf(tiny_checkpoint, adapter)
        effect = np.abs(_last_logits(with_adapter, PROMPT) - _last_logits(_hf(tiny_checkpoint), PROMPT)).max()
        assert effect > 0.1
        _assert_follows(llm, with_adapter, PROMPT, atol=effect / (4 if quantized else 20))
    finally:
        llm.close()


def test_an_adapter_for_other_modules_or_kinds_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import json

    adapter = _adapter(tiny_checkpoint, tmp_path / "adapter")
    base = checkpoint_to_gguf(tiny_checkpoint, tmp_path / "base.gguf")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ConversionError, match="only plain LoRA adapters"):
        merge_lora(base, adapter, tmp_path / "merged.gguf")


def test_a_repeated_prompt_reuses_its_prefix_and_computes_the_same_logits(tiny_llm: LlamaCpp) -> None:
    tiny_llm.clear_cache()
    first = tiny_llm.prefill([PROMPT])
    expected = first.logits[0].copy()
    tiny_llm.release(first.seqs[0])  # finished: kept for its prefix
    again = tiny_llm.prefill([PROMPT])
    assert again.reused == [len(PROMPT) - 1]  # all but the last token, whose logits are needed
    np.testing.assert_allclose(again.logits[0], expected, atol=1e-4)
    longer = tiny_llm.prefill([PROMPT + [7, 8, 9]])  # a turn extending the previous one
    assert longer.reused == [len(PROMPT)]
    fresh = tiny_llm.prefill([[1] + PROMPT[1:] + [7, 8, 9]])  # differs at the first token: nothing reused
    assert fresh.reused == [0]
    for seq in (*again.seqs, *longer.seqs, *fresh.seqs):
        tiny_llm.release(seq, keep=False)


def test_prompts_arriving_together_compute_their_shared_prefix_once(tiny_llm: LlamaCpp) -> None:
    tiny_llm.clear_cache()
    prompts = [PROMPT + [100 + i] for i in range(4)]
    together = tiny_llm.prefill(prompts)
    assert sorted(together.reused) == [0, len(PROMPT), len(PROMPT), len(PROMPT)]
    steps = tiny_llm.step(together.seqs, [3, 3, 3, 3]).copy()
    for seq in together.seqs:
        tiny_llm.release(seq, keep=False)
    tiny_llm.clear_cache()
    for i, prompt in enumerate(prompts):  # each alone, from nothing: the same logits
        alone = tiny_llm.prefill([prompt])
        assert alone.reused == [0]
        np.testing.assert_allclose(alone.logits[0], together.logits[i], atol=1e-4)
        np.testing.assert_allclose(tiny_llm.step(alone.seqs, [3])[0], steps[i], atol=1e-4)
        tiny_llm.release(alone.seqs[0], keep=False)


def test_cached_prefixes_give_way_when_cells_or_sequences_run_out(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    gguf = checkpoint_to_gguf(tiny_checkpoint, tmp_path / "tiny.gguf")
    llm = LlamaCpp(gguf, n_ctx=256, n_seq=3, threads=2)
    try:
        for i in range(5):  # more finished prompts than cells and sequence ids: the oldest go
            done = llm.prefill([[1 + i] + PROMPT[:100]])
            llm.release(done.seqs[0])
        assert len(llm.cached) <= 3
        big = llm.prefill([list(range(10, 10 + llm.n_ctx - 20))])  # nearly every cell: all cached go
        assert not llm.cached
        other = [7] * 110  # shares nothing with it
        with pytest.raises(CacheFullError, match="cells are full"):
            llm.prefill([other])  # no room beside the running sequence
        assert list(llm.kv) == big.seqs  # the refused prompt left nothing behind
        llm.release(big.seqs[0], keep=False)
        assert llm.prefill([other]).reused == [0]  # room again
    finally:
        llm.close()


def test_a_checkpoint_is_converted_once_and_again_when_it_changes(
    tiny_checkpoint: Path, tmp_path: Path, agentlm_home: Path
) -> None:
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    first = ensure_checkpoint_gguf(copy)
    stamp = first.stat().st_mtime_ns
    assert resolve_model(str(copy)).gguf == first and first.stat().st_mtime_ns == stamp
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")  # touched: converted anew
    assert ensure_checkpoint_gguf(copy) != first


def test_an_unconvertible_checkpoint_fails_as_an_engine_error(tmp_path: Path, agentlm_home: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(EngineError, match="convert_hf_to_gguf.py"):
        resolve_model(str(tmp_path))


def test_a_greedy_reply_is_the_same_with_prompt_lookup_and_takes_fewer_steps(tiny_checkpoint: Path) -> None:
    import asyncio

    from agentlm.serve.engines import GenerationRequest
    from agentlm.serve.engines.embedded import EmbeddedEngine

    words = "the leave policy says the leave policy says the leave policy says"
    request = GenerationRequest([{"role": "user", "content": words}], max_tokens=48, temperature=0)

    async def reply(engine: EmbeddedEngine) -> list[str]:
        return [c.text async for c in engine.generate(request)]

    replies = []
    for lookup in (0, 7):
        engine = EmbeddedEngine(str(tiny_checkpoint), prompt_lookup=lookup)
        try:
            replies.append(asyncio.run(reply(engine)))
            if lookup:
                assert engine.accepted > 0 and engine.drafted >= engine.accepted
        finally:
            engine.close()
    assert "".join(replies[0]) == "".join(replies[1])


def test_a_prompt_longer_than_a_batch_is_computed_in_pieces(tiny_checkpoint: Path, tmp_path: Path) -> None:
    gguf = checkpoint_to_gguf(tiny_checkpoint, tmp_path / "tiny.gguf")
    small = LlamaCpp(gguf, n_ctx=256, n_seq=2, n_batch=1024)  # llama.cpp caps the batch at n_ctx
    large = LlamaCpp(gguf, n_ctx=1024, n_seq=2, n_batch=64)
    try:
        assert small.n_batch == 256 and large.n_batch == 64
        prompt = [5 + i % 90 for i in range(200)]
        whole = small.prefill([prompt])
        pieces = large.prefill([prompt])  # four batches of 64 tokens, the last one short
        np.testing.assert_allclose(pieces.logits[0], whole.logits[0], atol=5e-3)
        assert len(large.kv[pieces.seqs[0]]) == len(prompt)
    finally:
        small.close()
        large.close()

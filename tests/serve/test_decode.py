"""The lean decode step: transformers' logits for Llama and Gemma 3 rows in a padded batch, or no
lean step at all."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import torch
from tiny import build_tiny_gemma
from transformers import LlamaConfig, LlamaForCausalLM

from agentlm.serve.engines import GenerationRequest
from agentlm.serve.engines.batching import PaddedBatch
from agentlm.serve.engines.decode import LeanDecoder
from agentlm.serve.engines.embedded import EmbeddedEngine
from agentlm.serve.engines.kernels import pack_linears, packing_available


def tiny_llama(**overrides) -> LlamaForCausalLM:
    """Two Llama layers with grouped-query attention (4 query heads, 2 key/value heads)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        **{
            "vocab_size": 128,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            **overrides,
        }
    )
    return LlamaForCausalLM(config).eval()


MODELS = {
    "gemma3": build_tiny_gemma,  # a 4-token sliding window on its first layer, q/k norms, sandwich norms
    "llama": tiny_llama,
    "llama with biases": lambda: tiny_llama(attention_bias=True, mlp_bias=True),
}


@pytest.mark.parametrize("name", MODELS)
def test_lean_rows_match_transformers_lone_runs_across_joins_and_leaves(name: str) -> None:
    model = MODELS[name]()
    decoder = LeanDecoder.build(model)
    assert decoder is not None
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16], [20], [30, 31, 32, 33, 34]]
    feed = [[(3 * i + 7 * s) % 120 + 2 for s in range(12)] for i in range(len(prompts))]

    def lone(i: int, steps: int) -> list[torch.Tensor]:  # transformers alone, one row
        batch = PaddedBatch(model)
        batch.join(batch.prefill([prompts[i]]))
        return [batch.step([feed[i][s]])[0] for s in range(steps)]

    with torch.inference_mode():
        expected = {i: lone(i, 10) for i in range(len(prompts))}
        batch = PaddedBatch(model, decoder)
        rows: list[int] = []
        done = {i: 0 for i in range(len(prompts))}
        joins = {0: [0, 1], 3: [2], 6: [3]}  # 0 and 1 left-padded together, past the window
        for step in range(12):
            if step in joins:
                batch.join(batch.prefill([prompts[i] for i in joins[step]]))
                rows.extend(joins[step])
            if step == 5:  # the longest prompt leaves: the others' padding columns go too
                batch.keep([r for r, i in enumerate(rows) if i != 1])
                rows.remove(1)
            logits = batch.step([feed[i][done[i]] for i in rows])
            assert logits.dtype == torch.float32 and logits.shape == (len(rows), 128)
            for r, i in enumerate(rows):
                if done[i] < 10:
                    torch.testing.assert_close(logits[r], expected[i][done[i]], atol=1e-5, rtol=1e-4)
                done[i] += 1


def test_fused_projections_share_memory_with_the_modules_prefill_uses() -> None:
    model = build_tiny_gemma()
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert LeanDecoder.build(model) is not None
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in before)  # same values, same names

    def follows(a: torch.Tensor, b: torch.Tensor) -> bool:  # b starts where a ends, in one storage
        return b.data_ptr() == a.data_ptr() + a.numel() * a.element_size()

    assert follows(attn.q_proj.weight, attn.k_proj.weight) and follows(attn.k_proj.weight, attn.v_proj.weight)
    assert follows(mlp.gate_proj.weight, mlp.up_proj.weight)


@pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN")
def test_packed_layers_are_called_as_they_are() -> None:
    model = build_tiny_gemma()
    assert pack_linears(model, "packed") > 0
    decoder = LeanDecoder.build(model)
    assert decoder is not None
    with torch.inference_mode():
        assert decoder.check() < 1e-5


@pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN")
def test_fused_layers_are_packed_by_their_own_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentlm.serve.engines import kernels

    def layouts(decoder: LeanDecoder) -> list[tuple[str, str]]:
        return [(type(layer.qkv).__name__, type(layer.gate_up).__name__) for layer in decoder.layers]

    # Tiny Gemma: q/k/v fuse to 64 -> 128, gate/up to 64 -> 256. Only a clear win is packed.
    monkeypatch.setattr(kernels, "packed_speedups", lambda *a, **k: {(64, 128): 1.05, (64, 256): 1.5})
    auto = LeanDecoder.build(build_tiny_gemma(), kernels="auto")
    assert auto is not None and layouts(auto) == [("Linear", "PackedLinear")] * 2 and auto.packed == 2
    model = build_tiny_gemma()
    ids = torch.randint(0, 128, (2, 9))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    everything = LeanDecoder.build(model, kernels="packed")
    assert everything is not None and layouts(everything) == [("PackedLinear", "PackedLinear")] * 2
    # Prefill's q, k and v stay plain; its MLP runs the packed gate/up, the plain weights gone.
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert type(attn.q_proj) is torch.nn.Linear and not hasattr(mlp, "gate_proj")
    assert mlp.gate_up is everything.layers[0].gate_up
    with torch.inference_mode():
        assert everything.check() < 1e-5
        torch.testing.assert_close(model(input_ids=ids).logits, before, atol=1e-5, rtol=1e-4)
    assert layouts(LeanDecoder.build(build_tiny_gemma(), kernels="plain")) == [("Linear", "Linear")] * 2  # type: ignore[arg-type]


def test_bfloat16_stays_within_its_precision() -> None:
    model = build_tiny_gemma().to(torch.bfloat16)
    decoder = LeanDecoder.build(model)
    assert decoder is not None
    with torch.inference_mode():
        assert decoder.check() < 5e-2


def test_models_it_does_not_know_or_whose_logits_differ_decode_with_transformers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    assert LeanDecoder.build(other.eval()) is None
    capped = build_tiny_gemma(attn_logit_softcapping=50.0)
    assert isinstance(capped, Gemma3ForCausalLM) and isinstance(capped.config, Gemma3TextConfig)
    assert LeanDecoder.build(capped) is None  # Gemma 2 style softcapping: not what the lean step computes

    # A lean step that computes something else is caught by the probe at load.
    monkeypatch.setattr(LeanDecoder, "_rms", lambda self, x, w: x * w)
    with caplog.at_level(logging.WARNING, logger="agentlm.serve.engines.decode"):
        assert LeanDecoder.build(build_tiny_gemma()) is None
    assert "logits differ" in caplog.text and "decoding with transformers" in caplog.text


def _greedy(engine: EmbeddedEngine, prompt: str) -> str:
    async def run() -> str:
        request = GenerationRequest([{"role": "user", "content": prompt}], max_tokens=16, temperature=0)
        return "".join([c.text async for c in engine.generate(request)])

    return asyncio.run(run())


def test_the_engine_decodes_alike_with_either_step(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="unknown decoder 'fast'.*auto, transformers"):
        EmbeddedEngine(str(tiny_checkpoint), decoder="fast")
    lean = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, kernels="plain")
    plain = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, kernels="plain", decoder="transformers")
    try:
        assert lean.decoder is not None and plain.decoder is None
        for prompt in ("What is the leave policy?", "Book a room for Monday."):
            assert _greedy(lean, prompt) == _greedy(plain, prompt)
    finally:
        lean.close()
        plain.close()

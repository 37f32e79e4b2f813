"""oneDNN-packed linear layers: the same numbers as nn.Linear, swapped in only when they check out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from tiny import build_tiny_gemma
from torch import nn

from agentlm.serve.engines import GenerationRequest
from agentlm.serve.engines.embedded import EmbeddedEngine
from agentlm.serve.engines.kernels import PackedLinear, pack_linears, packing_available, weights_dtype

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (7, 48), (2, 5, 48)])  # a decode row, a batch, a prefill
def test_a_packed_linear_computes_what_nn_linear_does(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias)
    x = torch.randn(shape)
    with torch.inference_mode():
        packed = PackedLinear(linear)
        got = packed(x)
        assert got.shape == (*shape[:-1], 80)
        torch.testing.assert_close(got, linear(x), atol=1e-5, rtol=1e-5)
        bf16 = PackedLinear(linear.to(torch.bfloat16))
        got = bf16(x)  # float32 activations meet bfloat16 weights: computed in bf16, returned as fp32
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, linear(x.bfloat16()).float(), atol=2e-2, rtol=2e-2)


def test_packing_a_model_keeps_its_logits_and_tied_embedding() -> None:
    model = build_tiny_gemma(attention_bias=True)
    ids = torch.tensor([[2, 5, 9, 14, 3, 7, 11, 40, 41, 42]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        embedding = model.get_input_embeddings().weight
        linears = sum(type(m) is nn.Linear for m in model.modules())
        assert pack_linears(model) == linears == 2 * 7 + 1  # q k v o gate up down per layer, the head
        assert not any(type(m) is nn.Linear for m in model.modules())
        assert model.get_input_embeddings().weight is embedding  # lookups still read the original
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)


def test_a_model_that_reads_a_projections_weight_is_left_unpacked() -> None:
    class ReadsWeight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {"vocab_size": 16})()
            self.embed = nn.Embedding(16, 8)
            self.proj = nn.Linear(8, 16)

        def forward(self, input_ids: torch.Tensor, use_cache: bool = False):
            hidden = self.embed(input_ids).to(self.proj.weight.dtype)  # PackedLinear has no .weight
            return type("Out", (), {"logits": self.proj(hidden)})()

    model = ReadsWeight()
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        expected = model(ids).logits
        assert pack_linears(model) == 0
        assert type(model.proj) is nn.Linear
        torch.testing.assert_close(model(ids).logits, expected)


def test_dtype_names() -> None:
    assert weights_dtype("auto") is torch.float32
    assert weights_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'.*float32, bfloat16"):
        weights_dtype("fp8")


def _greedy_text(engine: EmbeddedEngine, prompt: str, tokens: int) -> str:
    async def run() -> str:
        request = GenerationRequest([{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0)
        return "".join([c.text async for c in engine.generate(request)])

    return asyncio.run(run())


def test_the_packed_engine_replies_as_transformers_generate_does(tiny_checkpoint: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    reference = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    prompts = ["What is the leave policy?", "Book a room for Monday."]
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1)
    try:
        assert sum(isinstance(m, PackedLinear) for m in engine.model.modules()) == 4 * 7 + 1
        for prompt in prompts:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                out = reference.generate(ids, max_new_tokens=20, do_sample=False)
            want = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            assert _greedy_text(engine, prompt, 20) == want
    finally:
        engine.close()


def test_the_engine_serves_in_bfloat16(tiny_checkpoint: Path) -> None:
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, dtype="bfloat16")
    try:
        assert engine.model.dtype == torch.bfloat16
        packed = [m for m in engine.model.modules() if isinstance(m, PackedLinear)]
        assert packed and all(m.packed.dtype == torch.bfloat16 for m in packed)
        assert len(_greedy_text(engine, "What is the leave policy?", 12)) > 0
    finally:
        engine.close()

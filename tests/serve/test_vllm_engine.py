"""The vLLM engine's command line and child-process lifecycle.

Official vLLM needs a CUDA GPU, which this machine lacks; the lifecycle runs against a stand-in
executable that takes `vllm serve`'s flags and serves the tiny model with AgentLM's own
OpenAI-compatible server. The command line is checked exactly; docs/vllm.md has the GPU path.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import textwrap

import pytest

from agentlm.serve.engines import EngineError, GenerationRequest, ModelNotFoundError
from agentlm.serve.engines.vllm import VLLMEngine, vllm_command
from agentlm.serve.settings import ServeSettings


def test_the_command_line_carries_every_setting():
    settings = ServeSettings(
        model="/ckpt/agentlm-7b", engine="vllm", served_model_name="agentlm", tensor_parallel_size=2,
        gpu_memory_utilization=0.8, max_model_len=4096, api_key="k", lora_adapters={"hr": "/a/hr", "db": "/a/db"},
        vllm_extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json"],
    )  # fmt: skip
    assert vllm_command(settings, 9000) == [
        "vllm", "serve", "/ckpt/agentlm-7b", "--host", "127.0.0.1", "--port", "9000",
        "--served-model-name", "agentlm", "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8",
        "--max-model-len", "4096", "--api-key", "k", "--enable-lora", "--lora-modules", "db=/a/db", "hr=/a/hr",
        "--enable-auto-tool-choice", "--tool-call-parser", "llama3_json",
    ]  # fmt: skip
    minimal = vllm_command(ServeSettings(model="org/model", engine="vllm"), 1)
    assert minimal[minimal.index("--served-model-name") + 1] == "model" and "--api-key" not in minimal


def stand_in(tmp_path, body: str):
    """An executable named like vllm whose behaviour is `body` (Python), argv recorded."""
    path = tmp_path / "vllm"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


SERVE_LIKE_VLLM = """
    args = sys.argv[1:]
    assert args[0] == "serve"
    flag = lambda name: args[args.index(name) + 1]
    json.dump(args, open(os.environ["ARGV_FILE"], "w"))
    os.execv(sys.executable, [sys.executable, "-m", "agentlm.cli", "serve", "--model", args[1],
             "--host", flag("--host"), "--port", flag("--port"), "--served-model-name", flag("--served-model-name")])
"""


def test_the_child_starts_serves_and_stops_with_its_whole_group(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("ARGV_FILE", str(tmp_path / "argv.json"))
    settings = ServeSettings(
        model=str(tiny_checkpoint), engine="vllm", vllm_executable=str(stand_in(tmp_path, SERVE_LIKE_VLLM)),
        served_model_name="agentlm-tiny", vllm_start_timeout=120, store=tmp_path / "s.sqlite3",
    )  # fmt: skip
    engine = VLLMEngine.from_settings(settings)
    try:
        assert engine.model_id == "agentlm-tiny"
        assert json.loads((tmp_path / "argv.json").read_text())[:2] == ["serve", str(tiny_checkpoint)]

        async def ask() -> str:
            request = GenerationRequest(
                messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0
            )
            return "".join([c.text async for c in engine.generate(request)])

        assert isinstance(asyncio.run(ask()), str)
        asyncio.run(engine.health())
        pid = engine.process.pid
    finally:
        engine.close()
    assert engine.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing of the group is left


def test_a_child_that_dies_fails_the_start_with_its_log(tmp_path):
    crash = stand_in(tmp_path, 'print("CUDA error: no kernel image is available"); sys.exit(3)\n')
    settings = ServeSettings(model="m", engine="vllm", vllm_executable=str(crash), vllm_start_timeout=30)
    with pytest.raises(EngineError, match=r"exited with status 3(.|\n)*no kernel image"):
        VLLMEngine.from_settings(settings)


def test_a_child_that_never_gets_healthy_is_killed_after_the_timeout(tmp_path):
    hang = stand_in(tmp_path, 'print("loading weights...", flush=True)\nimport time\ntime.sleep(600)\n')
    settings = ServeSettings(model="m", engine="vllm", vllm_executable=str(hang), vllm_start_timeout=2)
    with pytest.raises(EngineError, match=r"not healthy after 2 s(.|\n)*loading weights"):
        VLLMEngine.from_settings(settings)


def test_a_missing_vllm_says_how_to_install_it():
    settings = ServeSettings(model="m", engine="vllm", vllm_executable="no-such-vllm")
    with pytest.raises(ModelNotFoundError, match=r"agentlm\[gpu\]"):
        VLLMEngine.from_settings(settings)

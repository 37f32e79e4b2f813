"""The vLLM engine: AgentLM starts `vllm serve` as a child process and forwards to it.

vLLM is a GPU server (the ``[gpu]`` extra pins its CUDA torch), so it is never imported here: the
child is a separate process, started with the flags below, on a private port of 127.0.0.1. When its
``/health`` answers, generation is forwarded exactly as the remote engine does (chat, raw prompts,
tools and tool calls). ``close()`` stops the child's whole process group: SIGTERM, then SIGKILL
after a grace period. A child that exits or never becomes healthy fails the start with the tail
of its log.

    agentlm serve --engine vllm --model runs/agentlm-7b --tensor-parallel-size 2

The command line is ``vllm_command(settings, port)``; docs/vllm.md covers the GPU path.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from agentlm.serve.engines.base import EngineError, ModelNotFoundError
from agentlm.serve.engines.remote import RemoteEngine

if TYPE_CHECKING:
    from agentlm.serve.settings import ServeSettings

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0
INSTALL_HINT = (
    "install the GPU extra on a CUDA machine (pip install 'agentlm[gpu]'), "
    "or point AGENTLM_VLLM_EXECUTABLE at a vllm executable"
)


def vllm_command(settings: ServeSettings, port: int) -> list[str]:
    """The `vllm serve` command line for these settings."""
    name = settings.served_model_name or Path(settings.model).name or settings.model
    cmd = [
        settings.vllm_executable, "serve", settings.model,
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", name,
        "--tensor-parallel-size", str(settings.tensor_parallel_size),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
    ]  # fmt: skip
    if settings.max_model_len:
        cmd += ["--max-model-len", str(settings.max_model_len)]
    if settings.api_key:
        cmd += ["--api-key", settings.api_key]
    if settings.lora_adapters:
        cmd += [
            "--enable-lora",
            "--lora-modules",
            *(f"{n}={p}" for n, p in sorted(settings.lora_adapters.items())),
        ]
    return cmd + list(settings.vllm_extra_args)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class VLLMEngine(RemoteEngine):
    """A `vllm serve` child process, reached like a remote OpenAI-compatible endpoint."""

    def __init__(self, settings: ServeSettings):
        from agentlm.processes import free_port

        if shutil.which(settings.vllm_executable) is None and not Path(settings.vllm_executable).is_file():
            raise ModelNotFoundError(f"no vllm executable {settings.vllm_executable!r}: {INSTALL_HINT}")
        port = settings.vllm_port or free_port()
        self.command = vllm_command(settings, port)
        self.log_path = Path(tempfile.mkstemp(prefix="agentlm-vllm-", suffix=".log")[1])
        log.info("starting vLLM: %s (log: %s)", shlex.join(self.command), self.log_path)
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            self._wait_healthy(
                f"http://127.0.0.1:{port}/health", settings.vllm_start_timeout, settings.api_key
            )
            super().__init__(base_url, None, settings.api_key, settings.served_model_name)
        except BaseException:
            self._stop_child()
            raise

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> VLLMEngine:
        return cls(settings)

    def _wait_healthy(self, url: str, timeout: float, api_key: str | None) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(
                    f"vLLM exited with status {self.process.returncode} before it was ready; its log "
                    f"({self.log_path}) ends with:\n{_log_tail(self.log_path)}"
                )
            try:
                if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise EngineError(
            f"vLLM was not healthy after {timeout:g} s (raise AGENTLM_VLLM_START_TIMEOUT for large models); "
            f"its log ({self.log_path}) ends with:\n{_log_tail(self.log_path)}"
        )

    async def health(self) -> None:
        if self.process.poll() is not None:
            raise EngineError(
                f"the vLLM child exited with status {self.process.returncode}; see {self.log_path}"
            )
        await super().health()

    def _stop_child(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stop_child()

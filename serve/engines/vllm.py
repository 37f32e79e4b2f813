"""The vLLM engine: AgentLM starts `vllm serve` as a child process and forwards to it.

vLLM is a GPU server (the ``[gpu]`` extra pins its CUDA torch), so it is never imported here: the
child is a separate process, started with the flags ``vllm_command`` builds, on a private port of
127.0.0.1, in its own process group, with its output in ``$AGENTLM_HOME/logs/``. Once its
``/health`` answers, generation is forwarded exactly as the remote engine does (chat, raw prompts,
tools and tool calls). ``close()`` stops the child's whole process group: SIGTERM, then SIGKILL
after a grace period. A child that exits, or is not healthy within ``vllm_start_timeout``, fails
the start with the tail of its log.

    agentlm serve --engine vllm --model runs/agentlm-7b --tensor-parallel-size 2

docs/vllm.md covers the GPU path.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agentlm.paths import home
from agentlm.processes import ServerStartError, free_port, wait_healthy
from agentlm.serve.engines.base import EngineError, ModelNotFoundError, is_embedded
from agentlm.serve.engines.remote import RemoteEngine

if TYPE_CHECKING:
    from agentlm.serve.settings import ServeSettings

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0  # vLLM frees GPU memory and stops its workers on SIGTERM; give it time
INSTALL_HINT = (
    "install the GPU extra: pip install 'agentlm[gpu]' (needs a CUDA GPU), or set AGENTLM_VLLM_EXECUTABLE"
)
LOG_TAIL_LINES = 40


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a slash is meant as a path.
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")


def served_name(settings: ServeSettings) -> str:
    """The model id clients use: the setting, else a directory's name, else the hub id itself.

    The same default as the embedded engine's, so switching engines keeps client code working.
    """
    if settings.served_model_name:
        return settings.served_model_name
    path = Path(settings.model).expanduser()
    return path.resolve().name if _looks_like_path(settings.model) or path.is_dir() else settings.model


def vllm_command(settings: ServeSettings, port: int) -> list[str]:
    """The `vllm serve` command line for these settings; extra args come last, so they win."""
    model = str(Path(settings.model).expanduser()) if settings.model.startswith("~") else settings.model
    cmd = [
        settings.vllm_executable, "serve", model,
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", served_name(settings),
        "--tensor-parallel-size", str(settings.tensor_parallel_size),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
    ]  # fmt: skip
    if settings.max_model_len:
        cmd += ["--max-model-len", str(settings.max_model_len)]
    if settings.dtype != "auto":
        cmd += ["--dtype", settings.dtype]
    if settings.api_key:  # the private port then refuses other local users too
        cmd += ["--api-key", settings.api_key]
    if settings.lora_adapters:
        cmd += [
            "--enable-lora",
            "--lora-modules",
            *(f"{name}={path}" for name, path in sorted(settings.lora_adapters.items())),
        ]
    return cmd + list(settings.vllm_extra_args)


def _redacted(cmd: list[str]) -> list[str]:
    """The command for logs: the API key's value hidden."""
    return ["***" if i and cmd[i - 1] == "--api-key" else arg for i, arg in enumerate(cmd)]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group.

    Zombies are skipped: they have exited, and where PID 1 does not reap orphans (some
    containers) they stay in the table for good.
    """
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the kernel's answer, zombies included
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state not in "ZX":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, sig)


def _check_port_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise EngineError(
                f"port {port} on 127.0.0.1 is in use ({e}); unset AGENTLM_VLLM_PORT to pick a free one"
            ) from None


class VLLMEngine(RemoteEngine):
    """A `vllm serve` child process, reached like a remote OpenAI-compatible endpoint."""

    def __init__(self, settings: ServeSettings):
        if is_embedded(settings.model):
            raise ModelNotFoundError(
                "the vLLM engine serves a checkpoint: pass --model with a checkpoint directory or a "
                "Hugging Face hub id (the embedded GGUF model runs on --engine embedded)"
            )
        if _looks_like_path(settings.model) and not Path(settings.model).expanduser().exists():
            raise ModelNotFoundError(f"no checkpoint at {settings.model}")
        if shutil.which(settings.vllm_executable) is None:
            raise EngineError(f"no vllm executable {settings.vllm_executable!r} found: {INSTALL_HINT}")
        if settings.vllm_port:
            _check_port_free(settings.vllm_port)
        port = settings.vllm_port or free_port()
        self.command = vllm_command(settings, port)
        logs = home() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"vllm-{time.strftime('%Y%m%d-%H%M%S')}-{port}.log"
        # vLLM reports usage statistics over the network unless told not to.
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **os.environ}
        with self.log_path.open("ab") as log_file:
            try:
                # A new session: the child and its workers form one process group to stop together.
                self.process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as e:  # e.g. a script with a broken interpreter line
                raise EngineError(f"could not run {settings.vllm_executable}: {e}; {INSTALL_HINT}") from e
        log.info(
            "started vLLM as process group %d: %s (log: %s)",
            self.process.pid,
            shlex.join(_redacted(self.command)),
            self.log_path,
        )
        atexit.register(self._stop_child)  # an interpreter exit without close() leaves no orphan
        # The served name is known, so the remote side needs no request to the child yet.
        super().__init__(
            f"http://127.0.0.1:{port}/v1",
            model=served_name(settings),
            api_key=settings.api_key,
            served_model_name=settings.served_model_name,
        )
        try:
            self._wait_healthy(f"http://127.0.0.1:{port}/health", settings.vllm_start_timeout)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> VLLMEngine:
        return cls(settings)

    def _wait_healthy(self, url: str, timeout: float) -> None:
        try:
            seconds = wait_healthy(url, self.process, timeout)
        except ServerStartError:
            if self.process.poll() is not None:
                raise EngineError(
                    f"vLLM exited with status {self.process.returncode} before it was ready; "
                    f"its log ({self.log_path}) ends with:\n{log_tail(self.log_path)}"
                ) from None
            raise EngineError(
                f"vLLM was not healthy after {timeout:g} s (raise AGENTLM_VLLM_START_TIMEOUT for large "
                f"models); its log ({self.log_path}) ends with:\n{log_tail(self.log_path)}"
            ) from None
        log.info("vLLM is ready after %.0f s", seconds)

    async def health(self) -> None:
        if self.process.poll() is not None:
            raise EngineError(
                f"the vLLM child exited with status {self.process.returncode}; "
                f"its log ({self.log_path}) ends with:\n{log_tail(self.log_path)}"
            )
        await super().health()

    def _stop_child(self) -> None:
        """SIGTERM the child's group, wait for all of it, SIGKILL what is left; reap the child."""
        pgid = self.process.pid  # the leader of its own session: its pid is the group id
        if self.process.poll() is None or group_members(pgid):
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while (self.process.poll() is None or group_members(pgid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.process.poll() is None or group_members(pgid):
                log.warning("vLLM did not stop within %g s of SIGTERM: killing it", STOP_GRACE_SECONDS)
                _signal_group(pgid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): say so, never hang
            log.error("vLLM (pid %d) did not exit after SIGKILL", pgid)

    def close(self) -> None:
        try:
            super().close()
        finally:
            atexit.unregister(self._stop_child)
            self._stop_child()

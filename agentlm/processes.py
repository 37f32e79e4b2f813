"""Starting and stopping AgentLM's own processes: the API server for `agentlm up`, tests, benchmarks."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> float:
    """Poll `url` until it answers 200; return the seconds it took."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise ServerStartError(
                f"the API server exited with status {proc.returncode}; see its messages above"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServerStartError(f"the API server did not become healthy at {url} within {timeout:.0f} s")


def start_server(
    args: list[str],
    port: int,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
    **popen,
) -> tuple[subprocess.Popen, float]:
    """Run `agentlm serve ARGS` on host:port and wait for /health; return the process and start seconds."""
    cmd = [sys.executable, "-m", "agentlm.cli", "serve", *args, "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=dict(env) if env is not None else None, **popen)
    reach = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # a wildcard bind answers on loopback
    try:
        return proc, wait_healthy(f"http://{reach}:{port}/health", proc, timeout)
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Ask politely (SIGINT, as Ctrl-C would), then kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

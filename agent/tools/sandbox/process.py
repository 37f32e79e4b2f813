"""One sandboxed process tree (``SandboxProcess``), and the one-off sandboxes built on it.

``SandboxProcess`` starts ``bwrap`` (or, in unsafe local mode, plain bash; or, in a task system,
``nsenter``) and can kill all of it: a command still running at its deadline gets the whole
sandbox killed (its pid namespace: every process in it, background jobs included).

``check_sandbox`` starts one throwaway sandbox to tell whether bubblewrap works here.
``run_isolated`` runs one command in a FRESH sandbox (nothing of a running session in it) over
given directories: the OS environment runs its checks there, where the agent cannot tamper.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentlm.agent.tools.sandbox.bwrap import bwrap_argv, limited, resolve_bwrap
from agentlm.agent.tools.sandbox.config import (
    HOW_TO_ENABLE,
    PATH,
    Bind,
    CommandResult,
    SandboxLimits,
    SandboxUnavailableError,
    ShellSettings,
)
from agentlm.agent.tools.sandbox.output import CappedOutput, pump
from agentlm.agent.tools.sandbox.uids import allocate_uid, kill_below, release_uid, sweep_uid
from agentlm.agent.tools.tasksystem import TaskSystem


class SandboxProcess:
    """One bwrap (or, unsafe, bash) process tree with a way to kill all of it."""

    def __init__(
        self,
        inner: list[str],
        *,
        settings: ShellSettings,
        limits: SandboxLimits,
        binds: Sequence[Bind],
        uid: int | None,
        unsafe_local: bool,
        cwd: Path | None,
        interactive: bool,
        system: TaskSystem | None = None,
    ):
        self.uid = uid
        self.unsafe_local = unsafe_local
        self.system = system
        self._pidfd: int | None = None
        ids: dict[str, Any] = {}
        if uid is not None:
            ids = {"user": uid, "group": uid, "extra_groups": []}
        stdin = subprocess.PIPE if interactive else subprocess.DEVNULL
        common: dict[str, Any] = dict(
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            start_new_session=True,
            **ids,
        )
        if system is not None:  # nsenter, as the host's root, into the running task system
            argv, preexec = limited(system.enter_argv(inner), limits)
            self.proc = subprocess.Popen(argv, cwd="/", env={"PATH": PATH}, preexec_fn=preexec, **common)
            return
        if unsafe_local:
            env = {"PATH": PATH, "HOME": str(cwd), "LANG": "C.UTF-8", "TERM": "dumb"}
            argv, preexec = limited(inner, limits)
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, preexec_fn=preexec, **common)
            return
        bwrap = resolve_bwrap(settings)
        info_r, info_w = os.pipe()
        try:
            argv, preexec = limited(bwrap_argv(bwrap, settings, limits, binds, info_w) + inner, limits)
            try:
                self.proc = subprocess.Popen(
                    argv, pass_fds=(info_w,), cwd="/", env={"PATH": PATH}, preexec_fn=preexec, **common
                )
            except OSError as e:
                raise SandboxUnavailableError(
                    f"could not start bubblewrap ({bwrap}) as the sandbox's uid: {e}. {HOW_TO_ENABLE}"
                ) from e
        finally:
            os.close(info_w)
        try:
            child = self._read_info(info_r)
        finally:
            os.close(info_r)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                self._pidfd = os.pidfd_open(child)

    @staticmethod
    def _read_info(fd: int) -> int | None:
        # bwrap writes {"child-pid": N} once the namespaces exist; EOF first means it failed.
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
            with contextlib.suppress(ValueError):
                return int(json.loads(data)["child-pid"])
        return None

    def kill(self) -> None:
        """SIGKILL every process of the sandbox and reap bwrap; idempotent. In a task system: the
        command's processes (a daemon that left them lives on until the system ends)."""
        if self.system is not None and self.proc.poll() is None:
            kill_below(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)  # nsenter, once its child is gone
        if self._pidfd is not None:
            # The pid namespace's init first: the kernel then kills and reaps everything in the
            # namespace, and bwrap (its parent) reaps it, so nothing is left as an orphan zombie.
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            os.close(self._pidfd)
            self._pidfd = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def sweep(self) -> list[int]:
        return sweep_uid(self.uid) if self.uid is not None else []


_probed: set[tuple[str, int]] = set()


def check_sandbox(settings: ShellSettings | None = None) -> None:
    """Start one throwaway sandbox; raise SandboxUnavailableError (with how to fix it) if it fails."""
    settings = settings or ShellSettings()
    bwrap = resolve_bwrap(settings)
    key = (bwrap, os.geteuid())
    if key in _probed:
        return
    uid = allocate_uid(settings) if os.geteuid() == 0 else None
    try:
        box = SandboxProcess(
            ["/bin/true"],
            settings=settings,
            limits=SandboxLimits(),
            binds=(),
            uid=uid,
            unsafe_local=False,
            cwd=None,
            interactive=False,
        )
        try:
            output, _ = box.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            box.kill()
            raise SandboxUnavailableError(
                f"bubblewrap ({bwrap}) did not start a sandbox within 30 s. {HOW_TO_ENABLE}"
            ) from None
        box.kill()
        if box.proc.returncode != 0:
            message = output.decode("utf-8", errors="replace").strip() or f"exit status {box.proc.returncode}"
            raise SandboxUnavailableError(
                f"bubblewrap ({bwrap}) could not create its sandbox here: {message}. {HOW_TO_ENABLE}"
            )
    finally:
        release_uid(uid)
    _probed.add(key)


def as_argv(command: str | Sequence[str]) -> list[str]:
    return ["/bin/bash", "-c", command] if isinstance(command, str) else list(command)


def run_once(
    argv: list[str],
    *,
    settings: ShellSettings,
    limits: SandboxLimits,
    binds: Sequence[Bind],
    uid: int | None,
    unsafe_local: bool,
    cwd: Path | None,
    timeout: float,
    system: TaskSystem | None = None,
) -> CommandResult:
    started = time.monotonic()
    box = SandboxProcess(
        argv,
        settings=settings,
        limits=limits,
        binds=binds,
        uid=uid,
        unsafe_local=unsafe_local,
        cwd=cwd,
        interactive=False,
        system=system,
    )
    capped = CappedOutput(limits.output_bytes, None)
    # In a task system the command is over when its process is; its background jobs live on there.
    exit_fd = os.pidfd_open(box.proc.pid) if system is not None else None
    try:
        _, timed_out = pump(box.proc.stdout.fileno(), None, b"", capped, started + timeout, exit_fd)
        if not timed_out:
            try:
                box.proc.wait(timeout=max(0.1, started + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True  # closed its output and kept running
    finally:
        if exit_fd is not None:
            os.close(exit_fd)
        box.kill()
        if unsafe_local:
            box.sweep()
    note = f"[the command was stopped after {timeout:g} s]" if timed_out else None
    return CommandResult(
        output=capped.text(),
        exit_code=None if timed_out else box.proc.returncode,
        timed_out=timed_out,
        truncated=capped.truncated,
        output_total=capped.total,
        seconds=time.monotonic() - started,
        note=note,
    )


def run_isolated(
    command: str | Sequence[str],
    *,
    binds: Sequence[Bind] = (),
    timeout: float | None = None,
    limits: SandboxLimits | None = None,
    settings: ShellSettings | None = None,
) -> CommandResult:
    """Run one command (bash code, or an argv) in a fresh sandbox, as a fresh uid, and remove it.

    Nothing of any session is in it: only the read-only system and `binds` (read-only unless a
    Bind says writable); /root is an empty tmpfs unless a bind targets it. bwrap runs as an
    unprivileged uid, so every directory on the way to a bind's source must be searchable by
    others (o+x), and the source readable (or writable) by them. Always isolated (there
    is no unsafe variant: a check that could be tampered with is no check).
    """
    settings = settings or ShellSettings()
    limits = limits or SandboxLimits()
    check_sandbox(settings)
    uid = allocate_uid(settings) if os.geteuid() == 0 else None
    try:
        return run_once(
            as_argv(command),
            settings=settings,
            limits=limits,
            binds=binds,
            uid=uid,
            unsafe_local=False,
            cwd=None,
            timeout=timeout or limits.timeout_seconds,
        )
    finally:
        release_uid(uid)

"""A persistent bash in a sandbox: ``ShellSession``, what the shell tool and the OS environment run.

``ShellSession`` keeps ONE bash process per task inside ``bwrap`` (AgentBench's OS task kept one
interactive bash per task: the working directory, variables and background jobs carry over from
one command to the next). Each command is sent to the shell's stdin as ``eval '<command>'``
followed by a sentinel line carrying its exit status; stdout and stderr (merged) are read until
that sentinel, keeping at most ``SandboxLimits.output_bytes`` in memory while reading on (and
discarding) past the cap, so a noisy command never blocks the shell nor fills the host's memory.

Timeouts: a command still running after ``SandboxLimits.timeout_seconds`` gets the whole sandbox
killed. The session then restarts on its next command with a fresh shell over the same scratch
directories: files in ``/root`` and ``/home`` are kept, the working directory, variables and
background jobs are not. The result of the stopped command says so (``CommandResult.note``).

Unsafe local mode (``unsafe_local=True`` or ``AGENTLM_SHELL_UNSAFE_LOCAL=1``) runs plain bash in
the scratch directory with the same rlimits and timeouts and NO isolation: the command sees the
host's files and network. It exists for machines without user namespaces, only when asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentlm.agent.tools.sandbox.config import (
    Bind,
    CommandResult,
    SandboxLimits,
    ShellClosedError,
    ShellSettings,
)
from agentlm.agent.tools.sandbox.output import CappedOutput, pump
from agentlm.agent.tools.sandbox.process import SandboxProcess, as_argv, check_sandbox, run_once
from agentlm.agent.tools.sandbox.uids import allocate_uid, release_uid, sweep_uid
from agentlm.agent.tools.tasksystem import TaskSystem

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64 * 1024  # longer bash code is misuse, and would sit in the shell's stdin pipe


def _unsafe_requested(unsafe_local: bool | None, settings: ShellSettings) -> bool:
    unsafe = settings.unsafe_local if unsafe_local is None else unsafe_local
    if unsafe:
        log.warning(
            "shell: UNSAFE local mode: commands run as plain bash with rlimits and timeouts only, "
            "with the host's files and network in reach"
        )
    return unsafe


def _rmtree(path: Path) -> None:
    def retry(func: Any, target: str, _exc: Any) -> None:
        # A directory the sandbox made unreadable (chmod 000): give it back its owner bits.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)

    shutil.rmtree(path, onerror=retry)


class ShellSession:
    """One persistent bash in a sandbox, over this session's scratch ``/root`` and ``/home``; or,
    given a ``TaskSystem``, one root bash in that system (``tasksystem.py``).

    Lazy: the sandbox is checked and started on the first command (or ``start()``). After a
    timeout or after the shell exits, the next command starts a new shell over the same files
    (cwd, variables and background jobs gone). ``close()`` kills every process the session
    started and removes the scratch directories; a task system is its owner's to close.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        settings: ShellSettings | None = None,
        unsafe_local: bool | None = None,
        system: TaskSystem | None = None,
    ):
        self.limits = limits or SandboxLimits()
        self.settings = settings or ShellSettings()
        self.system = system
        self.unsafe_local = False if system else _unsafe_requested(unsafe_local, self.settings)
        self.uid: int | None = allocate_uid(self.settings) if os.geteuid() == 0 and not system else None
        self._base = None if system else Path(tempfile.mkdtemp(prefix="agentlm-shell-"))
        # /root (HOME and the working directory) and /home inside, as the host sees them; a task
        # system's files live in its own mount namespace only.
        self.root_dir = self._base / "root" if self._base else None
        self.home_dir = self._base / "home" if self._base else None
        if self._base is not None:
            for path in (self.root_dir, self.home_dir):
                path.mkdir(mode=0o755)
            if self.uid is not None:
                for path in (self._base, self.root_dir, self.home_dir):
                    os.chown(path, self.uid, self.uid)
        self._box: SandboxProcess | None = None
        self._pending = b""  # output that arrived after the last sentinel
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0

    # --- lifecycle ---

    @property
    def alive(self) -> bool:
        return self._box is not None and self._box.proc.poll() is None

    @property
    def closed(self) -> bool:
        return self._closed

    def _binds(self, writable: bool = True) -> list[Bind]:
        if self._base is None:
            return []
        return [
            Bind(source=self.root_dir, target="/root", writable=writable),
            Bind(source=self.home_dir, target="/home", writable=writable),
        ]

    def start(self) -> None:
        """Start the shell (checks the sandbox first); a no-op when it runs."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._closed:
            raise ShellClosedError("the shell session is closed; open a new ShellSession")
        if self.alive:
            return
        if self._box is not None:
            self._stop()
            self.restarts += 1
        if not self.unsafe_local and self.system is None:
            check_sandbox(self.settings)
        self._box = SandboxProcess(
            ["/bin/bash", "--noprofile", "--norc"],
            settings=self.settings,
            limits=self.limits,
            binds=self._binds(),
            uid=self.uid,
            unsafe_local=self.unsafe_local,
            cwd=self.root_dir,
            interactive=True,
            system=self.system,
        )
        self._pending = b""

    def _stop(self) -> None:
        if self._box is not None:
            self._box.kill()
            left = self._box.sweep()
            if left:
                log.info("shell: killed %d processes left by uid %s", len(left), self.uid)

    def close(self) -> None:
        """Kill every process of the session and remove its scratch directories; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._stop()
                if self.uid is not None:
                    sweep_uid(self.uid)  # run_isolated's leftovers too: they ran as the same uid
            finally:
                self._box = None
                if self._base is not None:
                    _rmtree(self._base)
                release_uid(self.uid)

    def __enter__(self) -> ShellSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed:
                self.close()

    # --- commands ---

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run bash code in the persistent shell; raises ValueError on misuse, ShellClosedError after close."""
        if "\0" in command:
            raise ValueError("the command contains a NUL byte, which bash cannot read")
        if len(command.encode()) > MAX_COMMAND_BYTES:
            raise ValueError(
                f"the command is longer than {MAX_COMMAND_BYTES} bytes; write a script file instead"
            )
        timeout = timeout or self.limits.timeout_seconds
        with self._lock:
            self._start()
            box = self._box
            assert box is not None and box.proc.stdin is not None and box.proc.stdout is not None
            marker = f"__AGENTLM_{secrets.token_hex(8)}__"
            # eval keeps the shell's state (cd, variables) and turns a syntax error into a status;
            # stdin from /dev/null, so a command that reads input gets EOF instead of our next line.
            line = f"eval {shlex.quote(command)} </dev/null\nbuiltin printf '\\n{marker}%s\\n' \"$?\"\n"
            capped = CappedOutput(self.limits.output_bytes, marker.encode())
            started = time.monotonic()
            if self._pending:
                capped.feed(self._pending)  # cannot hold the sentinel: the marker is new
                self._pending = b""
            _, timed_out = pump(
                box.proc.stdout.fileno(), box.proc.stdin.fileno(), line.encode(), capped, started + timeout
            )
            found = capped.status is not None
            note = None
            if found:
                self._pending = capped.rest
            elif timed_out:
                self._stop()
                note = (
                    f"[the command was stopped after {timeout:g} s; the next command starts a new shell: "
                    "files in /root and /home are kept, the working directory, variables and background "
                    "jobs are not]"
                )
            else:  # EOF: the command ended the shell (exit, exec, kill $$)
                self._stop()
                status = box.proc.returncode
                note = (
                    f"[the shell exited (status {status}); the next command starts a new shell: files in "
                    "/root and /home are kept, the working directory, variables and background jobs are not]"
                )
            if capped.truncated:
                cut = f"[output cut: the command wrote {capped.total} bytes; the first {len(capped.kept)} are kept]"
                note = cut if note is None else f"{cut}\n{note}"
            return CommandResult(
                output=capped.text(),
                exit_code=capped.status,
                timed_out=timed_out and not found,
                truncated=capped.truncated,
                output_total=capped.total,
                seconds=time.monotonic() - started,
                note=note,
            )

    def run_isolated(
        self, command: str | Sequence[str], *, writable: bool = True, timeout: float | None = None
    ) -> CommandResult:
        """Run one command in a fresh sandbox over this session's /root and /home (not its shell).

        Same uid as the session, so files it writes belong to the session; read-only binds with
        ``writable=False``. In unsafe mode it runs as plain bash in the scratch /root. In a task
        system: a fresh root bash in the same system (as ``docker exec``; `writable` is moot).
        """
        with self._lock:
            if self._closed:
                raise ShellClosedError("the shell session is closed; open a new ShellSession")
            if not self.unsafe_local and self.system is None:
                check_sandbox(self.settings)
            return run_once(
                as_argv(command),
                settings=self.settings,
                limits=self.limits,
                binds=self._binds(writable),
                uid=self.uid,
                unsafe_local=self.unsafe_local,
                cwd=self.root_dir,
                timeout=timeout or self.limits.timeout_seconds,
                system=self.system,
            )

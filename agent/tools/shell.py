"""A bash shell in a bubblewrap sandbox, as a langchain-core tool that cannot reach the host.

``ShellSession`` keeps ONE bash process per task inside ``bwrap`` (AgentBench's OS task kept one
interactive bash per task: the working directory, variables and background jobs carry over from
one command to the next). Each command is sent to the shell's stdin as ``eval '<command>'``
followed by a sentinel line carrying its exit status; stdout and stderr (merged) are read until
that sentinel, keeping at most ``SandboxLimits.output_bytes`` in memory while reading on (and
discarding) past the cap, so a noisy command never blocks the shell nor fills the host's memory.

The sandbox:

- ``--unshare-all``: no network (a fresh net namespace whose loopback is not the host's), own pid,
  ipc, uts and user namespaces; ``--disable-userns`` so nothing inside can build another one.
- Read-only system (``/usr``, ``/etc``, the ``/bin``/``/lib*`` links), a fresh ``/proc`` and
  ``/dev``, size-capped tmpfs ``/tmp`` and ``/dev/shm``, and the root itself remounted read-only.
  The only host paths it can write are the session's scratch directories, bound at ``/root``
  (``HOME`` and the working directory, where AgentBench tasks work) and ``/home``.
- An unprivileged uid inside (1000 by default). When the host process is root, every session
  runs ``bwrap`` as its own random host uid (100000 and up, from ``ShellSettings``): RLIMIT_NPROC
  is not enforced for root, and a dedicated uid makes the process cap per session and lets
  ``close()`` find and kill everything the session started, whatever it did to its process group.
- rlimits (CPU, address space, file size, open files, processes) set in the child before
  ``bwrap`` is exec'd (by util-linux ``prlimit``, else a preexec_fn), so they bind everything
  inside (``SandboxLimits``).

Timeouts: a command still running after ``SandboxLimits.timeout_seconds`` gets the whole sandbox
killed (its pid namespace: every process in it, background jobs included). The session then
restarts on its next command with a fresh shell over the same scratch directories: files in
``/root`` and ``/home`` are kept, the working directory, variables and background jobs are not.
The result of the stopped command says so (``CommandResult.note``), and so does the tool's text.

``run_isolated`` runs one command in a FRESH sandbox (nothing of a running session in it) over
given directories: the OS environment runs its checks there, where the agent cannot tamper.

Unsafe local mode (``unsafe_local=True`` or ``AGENTLM_SHELL_UNSAFE_LOCAL=1``) runs plain bash in
the scratch directory with the same rlimits and timeouts and NO isolation: the command sees the
host's files and network. It exists for machines without user namespaces, only when asked.

To time the sandbox against a plain subprocess (benchmarks): ``measure_latency("true")``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import random
import re
import resource
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentlm.agent.protocols import os_observation
from agentlm.agent.tools.tasksystem import TaskSystem

log = logging.getLogger(__name__)

__all__ = [
    "Bind",
    "CommandResult",
    "LatencyReport",
    "SandboxLimits",
    "SandboxUnavailableError",
    "ShellClosedError",
    "ShellInput",
    "ShellSession",
    "ShellSettings",
    "ShellTool",
    "check_sandbox",
    "measure_latency",
    "processes_of",
    "run_isolated",
]

MiB = 1 << 20
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_COMMAND_BYTES = 64 * 1024  # longer bash code is misuse, and would sit in the shell's stdin pipe
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

HOW_TO_ENABLE = (
    "To enable it: install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    "bubblewrap) or point AGENTLM_SHELL_BWRAP at it. bwrap needs unprivileged user namespaces: "
    "sysctl -w user.max_user_namespaces=15000 where it is 0, sysctl -w kernel.unprivileged_userns_clone=1 "
    "on Debian/Ubuntu kernels that have it, and on Ubuntu 24.04+ sysctl -w "
    "kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for bwrap). Inside Docker the "
    "default seccomp and AppArmor profiles block the unshare/mount calls bwrap makes and /proc cannot be "
    "mounted over the masked one: run the container with --security-opt seccomp=unconfined "
    "--security-opt apparmor=unconfined --security-opt systempaths=unconfined, or with --privileged. "
    "Without isolation (UNSAFE: commands see the host's files and network) set AGENTLM_SHELL_UNSAFE_LOCAL=1."
)


class SandboxUnavailableError(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here; the message says how to fix it."""


class ShellClosedError(RuntimeError):
    """A command was sent to a session after close()."""


class SandboxLimits(BaseModel):
    """Per-command timeout and output cap, and the rlimits every process in the sandbox gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: float = Field(10.0, gt=0)  # wall clock per command; then the sandbox is killed
    output_bytes: int = Field(1 * MiB, ge=1024)  # kept per command; the rest is read and dropped
    cpu_seconds: int = Field(60, ge=1)  # RLIMIT_CPU, per process
    memory_bytes: int = Field(1024 * MiB, ge=64 * MiB)  # RLIMIT_AS, per process
    file_bytes: int = Field(64 * MiB, ge=MiB)  # RLIMIT_FSIZE: the largest file a process may write
    open_files: int = Field(256, ge=32)  # RLIMIT_NOFILE
    processes: int = Field(64, ge=8)  # RLIMIT_NPROC for the session's uid (only binds a non-root uid)
    tmp_bytes: int = Field(64 * MiB, ge=MiB)  # size of the /tmp tmpfs (and of /dev/shm, 1/4 of it)
    disk_bytes: int = Field(512 * MiB, ge=16 * MiB)  # a task system's writable layer (tasksystem.py)


class ShellSettings(BaseSettings):
    """Where bwrap is and how sessions map to host uids; ``AGENTLM_SHELL_*`` variables override."""

    model_config = SettingsConfigDict(env_prefix="AGENTLM_SHELL_", extra="ignore")

    bwrap: str = "bwrap"  # a name looked up on PATH, or a path
    unsafe_local: bool = False  # plain bash, no isolation: only when explicitly asked
    inner_uid: int = 1000  # the uid (and gid) commands see inside the sandbox
    uid_base: int = 100_000  # when the host process is root, each session runs as a random
    uid_count: int = 1 << 20  # host uid in [uid_base, uid_base + uid_count)
    system_uid_base: int = 2_000_000  # task systems map their uids 0-65535 to the host's from here
    image_mirror: str = "http://deb.debian.org/debian"  # where the task systems' image is built from


class Bind(BaseModel):
    """A host directory visible at `target` inside a sandbox."""

    model_config = ConfigDict(frozen=True)

    source: Path
    target: str
    writable: bool = False


@dataclass
class CommandResult:
    output: str  # stdout and stderr as they interleaved, at most output_bytes of it
    exit_code: int | None  # None when the command was stopped or the shell died
    timed_out: bool = False
    truncated: bool = False  # output_bytes was reached; output_total says how much there was
    output_total: int = 0  # bytes the command wrote
    seconds: float = 0.0
    note: str | None = None  # what happened to the shell, for the model (timeouts, exits, cuts)


# --- uids and processes ----------------------------------------------------------------------------

_uids_in_use: set[int] = set()
_uid_lock = threading.Lock()


def _process_uids() -> dict[int, int]:
    """pid -> real uid of every live (non-zombie) process on the host."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        state = re.search(r"^State:\s+(\S)", status, re.M)
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if uid and not (state and state.group(1) in "ZX"):
            out[int(entry.name)] = int(uid.group(1))
    return out


def processes_of(uid: int | range) -> list[int]:
    """Live processes running as host `uid`, or as any uid in a range (what a session or a task
    system leaves behind, if anything)."""
    uids = uid if isinstance(uid, range) else range(uid, uid + 1)
    return [pid for pid, u in _process_uids().items() if u in uids]


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children first seen, then theirs), as the host sees them."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and ")"
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_below(pid: int) -> None:
    """SIGKILL everything below `pid` until nothing is left (a forking loop too); `pid` itself is
    left to reap its children and exit. (nsenter's child: were nsenter killed first, the child's
    zombie would go to the host's init, and the task system's pid 1 waits for it to be reaped.)"""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        below = _descendants(pid)
        if not below:
            return
        for target in below:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGKILL)
        time.sleep(0.01)


def _allocate_uid(settings: ShellSettings) -> int:
    busy = set(_process_uids().values())
    with _uid_lock:
        for _ in range(1000):
            uid = settings.uid_base + random.randrange(settings.uid_count)
            if uid not in _uids_in_use and uid not in busy:
                with contextlib.suppress(KeyError):
                    pwd.getpwuid(uid)
                    continue  # a real account: never borrow it
                _uids_in_use.add(uid)
                return uid
    raise RuntimeError("could not find a free uid for the sandbox; widen AGENTLM_SHELL_UID_COUNT")


def _release_uid(uid: int | None) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of host `uid` at once: kill(-1) from a helper running as that uid.

    kill(-1) walks the process list under the kernel's tasklist lock, so a fork bomb cannot race
    it; Linux spares the caller itself.
    """
    subprocess.run(
        ["/bin/bash", "-c", "kill -9 -1"],
        user=uid,
        group=uid,
        extra_groups=[],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=10,
        check=False,
    )


def _sweep_uid(uid: int) -> list[int]:
    """Kill whatever still runs as host `uid`; returns the pids that were left before the sweep."""
    left = processes_of(uid)
    deadline = time.monotonic() + 5
    while processes_of(uid) and time.monotonic() < deadline:
        _kill_uid(uid)
        time.sleep(0.02)
    return left


def _rlimits(limits: SandboxLimits) -> list[tuple[int, str, int, int]]:
    """(resource, prlimit flag, soft, hard) for every limit the sandbox gets."""
    return [
        # CPU: the soft limit sends SIGXCPU, the hard one a second later SIGKILL.
        (resource.RLIMIT_CPU, "--cpu", limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_AS, "--as", limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, "--fsize", limits.file_bytes, limits.file_bytes),
        (resource.RLIMIT_NOFILE, "--nofile", limits.open_files, limits.open_files),
        (resource.RLIMIT_NPROC, "--nproc", limits.processes, limits.processes),
        (resource.RLIMIT_CORE, "--core", 0, 0),
    ]


def _limited(argv: list[str], limits: SandboxLimits) -> tuple[list[str], Callable[[], None] | None]:
    """argv that applies the rlimits before exec'ing, and a preexec_fn when that needs Python.

    util-linux ``prlimit`` does it in the child with no Python after fork (a preexec_fn is not safe
    in a threaded server); without it, fall back to setting them in a preexec_fn.
    """
    prlimit = shutil.which("prlimit", path=PATH)
    if prlimit:
        flags = [f"{flag}={soft}:{hard}" for _, flag, soft, hard in _rlimits(limits)]
        return [prlimit, *flags, "--", *argv], None

    def apply() -> None:
        for name, _, soft, hard in _rlimits(limits):
            resource.setrlimit(name, (soft, hard))

    return argv, apply


# --- the sandbox's command line ---------------------------------------------------------------------


def _resolve_bwrap(settings: ShellSettings) -> str:
    found = shutil.which(settings.bwrap) if os.sep not in settings.bwrap else settings.bwrap
    if not found or not os.access(found, os.X_OK):
        raise SandboxUnavailableError(
            f"the shell sandbox needs bubblewrap, and {settings.bwrap!r} was not found or is not "
            f"executable. {HOW_TO_ENABLE}"
        )
    return found


def _bwrap_argv(
    bwrap: str,
    settings: ShellSettings,
    limits: SandboxLimits,
    binds: Sequence[Bind],
    info_fd: int,
) -> list[str]:
    argv = [bwrap, "--die-with-parent", "--unshare-all", "--unshare-user", "--disable-userns"]
    argv += ["--new-session", "--hostname", "sandbox"]
    argv += ["--uid", str(settings.inner_uid), "--gid", str(settings.inner_uid)]
    argv += ["--clearenv", "--setenv", "PATH", PATH, "--setenv", "HOME", "/root"]
    argv += ["--setenv", "LANG", "C.UTF-8", "--setenv", "TERM", "dumb"]
    argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for path in _ROOT_LINKS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(limits.tmp_bytes // 4), "--tmpfs", "/dev/shm"]
    argv += ["--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    if "/root" not in {b.target for b in binds}:
        argv += ["--size", str(limits.tmp_bytes), "--tmpfs", "/root"]
    for bind in binds:
        argv += ["--bind" if bind.writable else "--ro-bind", str(bind.source), bind.target]
    argv += ["--chdir", "/root", "--remount-ro", "/dev", "--remount-ro", "/"]
    argv += ["--info-fd", str(info_fd), "--"]
    return argv


class _Sandbox:
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
            argv, preexec = _limited(system.enter_argv(inner), limits)
            self.proc = subprocess.Popen(argv, cwd="/", env={"PATH": PATH}, preexec_fn=preexec, **common)
            return
        if unsafe_local:
            env = {"PATH": PATH, "HOME": str(cwd), "LANG": "C.UTF-8", "TERM": "dumb"}
            argv, preexec = _limited(inner, limits)
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, preexec_fn=preexec, **common)
            return
        bwrap = _resolve_bwrap(settings)
        info_r, info_w = os.pipe()
        try:
            argv, preexec = _limited(_bwrap_argv(bwrap, settings, limits, binds, info_w) + inner, limits)
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
            _kill_below(self.proc.pid)
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
        return _sweep_uid(self.uid) if self.uid is not None else []


# --- reading output ---------------------------------------------------------------------------------


class _Capped:
    """The output stream of one command: keeps the first `cap` bytes, counts the rest, finds the sentinel."""

    def __init__(self, cap: int, marker: bytes | None):
        self.cap = cap
        self.kept = bytearray()
        self.total = 0
        self.status: int | None = None
        self.rest = b""  # bytes after the sentinel (a background job's output): the next command's
        self._tail = b""
        self._sentinel = re.compile(rb"\n" + re.escape(marker) + rb"(-?\d+)\n") if marker else None
        self._tail_len = len(marker) + 32 if marker else 0

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; True once the sentinel was seen (the command finished)."""
        if self._sentinel is not None:
            start = self.total - len(self._tail)
            window = self._tail + chunk
            found = self._sentinel.search(window)
            if found:
                end = start + found.start()  # where the command's own output ends in the stream
                self._keep(chunk[: max(0, end - self.total)])
                del self.kept[end:]
                self.total = end
                self.status = int(found.group(1))
                self.rest = window[found.end() :]
                return True
            self._tail = window[-self._tail_len :]
        self._keep(chunk)
        self.total += len(chunk)
        return False

    def _keep(self, chunk: bytes) -> None:
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    def text(self) -> str:
        return bytes(self.kept).decode("utf-8", errors="replace")


def _pump(
    out_fd: int, in_fd: int | None, data: bytes, capped: _Capped, deadline: float, exit_fd: int | None = None
) -> tuple[bool, bool]:
    """Write `data` to in_fd and read out_fd into `capped` until the sentinel, EOF or the deadline,
    or until `exit_fd` (a pidfd) says the process exited: then what it wrote is read, and a
    background job it left holding the pipe is not waited for (``docker exec``'s end).

    Returns (eof, timed_out). Writes are non-blocking and interleaved with reads, so a shell busy
    printing never deadlocks against a long command still being written.
    """
    poller = select.poll()
    poller.register(out_fd, select.POLLIN)
    if exit_fd is not None:
        poller.register(exit_fd, select.POLLIN)
    if in_fd is not None and data:
        os.set_blocking(in_fd, False)
        poller.register(in_fd, select.POLLOUT)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, True
        for fd, event in poller.poll(min(remaining, 1.0) * 1000):
            if fd == exit_fd:  # what is in the pipe now; a background job writing on is not waited for
                os.set_blocking(out_fd, False)
                with contextlib.suppress(BlockingIOError):
                    while time.monotonic() < deadline and (chunk := os.read(out_fd, 65536)):
                        if capped.feed(chunk):
                            break
                return True, False
            if fd == out_fd:
                chunk = os.read(out_fd, 65536)
                if not chunk:
                    return True, False
                if capped.feed(chunk):
                    return False, False
            elif fd == in_fd:
                if event & (select.POLLERR | select.POLLHUP):
                    poller.unregister(in_fd)  # the shell is gone; its EOF on out_fd follows
                    continue
                try:
                    written = os.write(in_fd, data[:65536])
                except BrokenPipeError:
                    poller.unregister(in_fd)
                    continue
                except BlockingIOError:
                    continue
                data = data[written:]
                if not data:
                    poller.unregister(in_fd)


# --- one-off sandboxes ------------------------------------------------------------------------------


_probed: set[tuple[str, int]] = set()


def check_sandbox(settings: ShellSettings | None = None) -> None:
    """Start one throwaway sandbox; raise SandboxUnavailableError (with how to fix it) if it fails."""
    settings = settings or ShellSettings()
    bwrap = _resolve_bwrap(settings)
    key = (bwrap, os.geteuid())
    if key in _probed:
        return
    uid = _allocate_uid(settings) if os.geteuid() == 0 else None
    try:
        box = _Sandbox(
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
        _release_uid(uid)
    _probed.add(key)


def _unsafe_requested(unsafe_local: bool | None, settings: ShellSettings) -> bool:
    unsafe = settings.unsafe_local if unsafe_local is None else unsafe_local
    if unsafe:
        log.warning(
            "shell: UNSAFE local mode: commands run as plain bash with rlimits and timeouts only, "
            "with the host's files and network in reach"
        )
    return unsafe


def _as_argv(command: str | Sequence[str]) -> list[str]:
    return ["/bin/bash", "-c", command] if isinstance(command, str) else list(command)


def _run_once(
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
    box = _Sandbox(
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
    capped = _Capped(limits.output_bytes, None)
    # In a task system the command is over when its process is; its background jobs live on there.
    exit_fd = os.pidfd_open(box.proc.pid) if system is not None else None
    try:
        _, timed_out = _pump(box.proc.stdout.fileno(), None, b"", capped, started + timeout, exit_fd)
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
    uid = _allocate_uid(settings) if os.geteuid() == 0 else None
    try:
        return _run_once(
            _as_argv(command),
            settings=settings,
            limits=limits,
            binds=binds,
            uid=uid,
            unsafe_local=False,
            cwd=None,
            timeout=timeout or limits.timeout_seconds,
        )
    finally:
        _release_uid(uid)


# --- the persistent session -------------------------------------------------------------------------


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
        self.uid: int | None = _allocate_uid(self.settings) if os.geteuid() == 0 and not system else None
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
        self._box: _Sandbox | None = None
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
        self._box = _Sandbox(
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
                    _sweep_uid(self.uid)  # run_isolated's leftovers too: they ran as the same uid
            finally:
                self._box = None
                if self._base is not None:
                    _rmtree(self._base)
                _release_uid(self.uid)

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
            capped = _Capped(self.limits.output_bytes, marker.encode())
            started = time.monotonic()
            if self._pending:
                capped.feed(self._pending)  # cannot hold the sentinel: the marker is new
                self._pending = b""
            _, timed_out = _pump(
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
            return _run_once(
                _as_argv(command),
                settings=self.settings,
                limits=self.limits,
                binds=self._binds(writable),
                uid=self.uid,
                unsafe_local=self.unsafe_local,
                cwd=self.root_dir,
                timeout=timeout or self.limits.timeout_seconds,
                system=self.system,
            )


# --- the tool ---------------------------------------------------------------------------------------


class ShellInput(BaseModel):
    command: str = Field(description="bash code to run in the shell")


class ShellTool(BaseTool):
    """Run bash in a persistent sandboxed shell; returns AgentBench's OS observation text."""

    name: str = "bash"
    description: str = (
        "Run bash code in a persistent Linux shell (no network; /root and /home are writable; the "
        "working directory, variables and background jobs carry over between calls) and return its output."
    )
    args_schema: type[BaseModel] = ShellInput
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    unsafe_local: bool | None = None  # None: AGENTLM_SHELL_UNSAFE_LOCAL decides
    session: ShellSession | None = None  # given: shared, and not closed by the tool

    _own: ShellSession | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def shell(self) -> ShellSession:
        """The session commands go to; made on first use when none was given."""
        if self.session is not None:
            return self.session
        with self._lock:
            if self._own is None:
                self._own = ShellSession(self.limits, unsafe_local=self.unsafe_local)
            return self._own

    def _run(self, command: str, run_manager: Any = None) -> str:
        """Errors come back as text, so the agent loop never sees an exception from here."""
        if not command.strip():
            return "Error: the command is empty; put bash code in the ```bash block."
        try:
            result = self.shell().run(command)
        except (ValueError, ShellClosedError, SandboxUnavailableError) as e:
            return f"Error: {e}"
        text = os_observation(result.output.rstrip("\n"))
        return f"{text}\n{result.note}" if result.note else text

    def close(self) -> None:
        with self._lock:
            if self._own is not None:
                self._own.close()
                self._own = None


# --- latency ----------------------------------------------------------------------------------------


class LatencyReport(BaseModel):
    command: str
    repeats: int
    persistent_s: float  # median seconds per command in one persistent sandboxed session
    fresh_s: float  # median seconds for run_isolated (a new sandbox per command)
    plain_s: float  # median seconds for subprocess.run(["bash", "-c", command])
    first_command_s: float  # the session's first command, sandbox start included


def measure_latency(
    command: str = "true", repeats: int = 20, settings: ShellSettings | None = None
) -> LatencyReport:
    """Time `command` in a persistent session, in a fresh sandbox, and as a plain subprocess."""
    import statistics

    settings = settings or ShellSettings()

    def median(run: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    with ShellSession(settings=settings, unsafe_local=False) as session:
        started = time.perf_counter()
        session.run(command)
        first = time.perf_counter() - started
        persistent = median(lambda: session.run(command))
    fresh = median(lambda: run_isolated(command, settings=settings))
    plain = median(lambda: subprocess.run(["bash", "-c", command], capture_output=True, check=False))
    return LatencyReport(
        command=command,
        repeats=repeats,
        persistent_s=persistent,
        fresh_s=fresh,
        plain_s=plain,
        first_command_s=first,
    )

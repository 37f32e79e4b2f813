"""The command line that starts a sandboxed process: bubblewrap's namespaces and mounts, and the
rlimits put in front of every sandboxed command (bwrap, unsafe-mode bash, or nsenter into a task
system).

- ``--unshare-all``: no network (a fresh net namespace whose loopback is not the host's), own pid,
  ipc, uts and user namespaces; ``--disable-userns`` so nothing inside can build another one.
- Read-only system (``/usr``, ``/etc``, the ``/bin``/``/lib*`` links), a fresh ``/proc`` and
  ``/dev``, size-capped tmpfs ``/tmp`` and ``/dev/shm``, and the root itself remounted read-only.
  The only host paths it can write are the binds it is given (a session's scratch ``/root`` and
  ``/home``).
- An unprivileged uid inside (``ShellSettings.inner_uid``, 1000 by default).
- rlimits (CPU, address space, file size, open files, processes) set in the child before
  ``bwrap`` is exec'd (by util-linux ``prlimit``, else a preexec_fn), so they bind everything
  inside (``SandboxLimits``).
"""

from __future__ import annotations

import os
import resource
import shutil
from collections.abc import Callable, Sequence

from agentlm.agent.tools.sandbox.config import (
    HOW_TO_ENABLE,
    PATH,
    Bind,
    SandboxLimits,
    SandboxUnavailableError,
    ShellSettings,
)

_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


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


def limited(argv: list[str], limits: SandboxLimits) -> tuple[list[str], Callable[[], None] | None]:
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


def resolve_bwrap(settings: ShellSettings) -> str:
    found = shutil.which(settings.bwrap) if os.sep not in settings.bwrap else settings.bwrap
    if not found or not os.access(found, os.X_OK):
        raise SandboxUnavailableError(
            f"the shell sandbox needs bubblewrap, and {settings.bwrap!r} was not found or is not "
            f"executable. {HOW_TO_ENABLE}"
        )
    return found


def bwrap_argv(
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

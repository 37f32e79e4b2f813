"""A throwaway Linux system per task: root inside, copy-on-write over an image, nothing of the host.

AgentBench runs every OS task as root in a fresh Docker container. ``TaskSystem`` gives a task the
same, without a container runtime:

- **Namespaces**: user, mount, pid, network, ipc and uts. The user namespace maps uids and gids
  0-65535 inside to a block of host ids (``ShellSettings.system_uid_base`` and up), so root inside
  is an unprivileged host uid, and ``useradd``, ``chown`` and ``su`` to new users work.
- **Copy-on-write root**: an overlay whose lower layer is the image (``osimage.py``: a Debian
  userland like AgentBench's Ubuntu one) and whose upper layer is a tmpfs of
  ``SandboxLimits.disk_bytes``, private to the task's mount namespace. When the task ends the
  namespace goes and the upper layer with it: nothing to clean up on the host.
- **Root, but Docker's root**: every process entered into the system runs with Docker's default
  capability bounding set (no ``CAP_SYS_ADMIN``, ``CAP_SYS_MODULE``, ``CAP_SYS_PTRACE``...), and the
  system cannot make further user namespaces (``user.max_user_namespaces = 0`` inside), so nothing
  in it regains the capabilities its user namespace holds. Being a user namespace's root, it has
  no power over the host's files, devices, kernel or network at all.
- **Bounds**: the disk is the tmpfs' size; processes, memory, file size and CPU are the rlimits
  every entered process gets (``SandboxLimits``); the wall clock is the caller's.

How: ``TaskSystem.start`` runs this module as a small launcher (``python -m ...tasksystem``), which
forks a child that unshares the namespaces; the launcher, still the host's root, writes the child's
uid and gid maps. The child forks the system's pid 1, which mounts the overlay, /proc, /dev, /sys
and /dev/shm, pivots into the new root, detaches the old one and becomes a reaper for orphans.
Commands enter the running system with util-linux ``nsenter`` (as ``docker exec`` does) and
``setpriv`` (the capability bounding set). The launcher's children die with it
(``PR_SET_PDEATHSIG``), and pid 1's death ends every process in the system, so ``close`` (or a
killed host process) leaves nothing behind.

Why not bubblewrap, which the plain shell sandbox uses: bwrap maps a single uid into its user
namespace, so ``chown`` to any other user fails, and podman needs newuidmap, /etc/subuid entries
and a container store. Starting a system takes ~50-100 ms (``benchmarks/os_tasks.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# The capabilities Docker gives a container's root by default (moby's defaults): what AgentBench's
# tasks ran with. CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_NET_ADMIN... are not among them.
DOCKER_CAPS = {  # name: capability number (linux/capability.h)
    "chown": 0,
    "dac_override": 1,
    "fowner": 3,
    "fsetid": 4,
    "kill": 5,
    "setgid": 6,
    "setuid": 7,
    "setpcap": 8,
    "net_bind_service": 10,
    "net_raw": 13,
    "sys_chroot": 18,
    "mknod": 27,
    "audit_write": 29,
    "setfcap": 31,
}
_PR_CAPBSET_DROP = 24
UID_COUNT = 65536  # ids 0-65535 inside, as a container has
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTNAME = "task"

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG = 1
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_MASKED = ("/proc/tty/driver", "/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware")
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# pid 1 inside: reaps orphans (a background job whose shell is gone) until the system ends.
_REAPER = """
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    signal.sigtimedwait([signal.SIGCHLD], 60)
"""


class TaskSystemError(RuntimeError):
    """The task system could not start here; the message says why and what to do."""


# --- the launcher (runs as its own process: python -m agentlm.agent.tools.tasksystem) -------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # this process's own symbols: libc's among them


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    libc: ctypes.CDLL, source: str, target: str, fstype: str | None, flags: int, data: str = ""
) -> None:
    _check(
        libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() or None,
        ),
        f"mount {fstype or 'bind'} {source} on {target}",
    )


def _loopback_up() -> None:
    """Bring up lo in the new network namespace, as a container has it (and nothing else)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, request + b"\0" * 14)[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up) + b"\0" * 14)


def _mount_root(libc: ctypes.CDLL, image: str, stage: str, uid_base: int, disk_bytes: int) -> str:
    """As the host's root, in a mount namespace of its own (as Docker's daemon mounts a container's
    root): the overlay over the image with a tmpfs upper layer, and /dev. Returns the new root."""
    _mount(libc, "none", "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
    _mount(libc, "task", stage, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={disk_bytes},mode=0755")
    upper, work, root = (f"{stage}/{name}" for name in ("upper", "work", "root"))
    for path in (upper, work, root):
        os.mkdir(path, 0o755)
    os.chown(upper, uid_base, uid_base)  # the merged / belongs to root inside
    _mount(libc, "overlay", root, "overlay", 0, f"lowerdir={image},upperdir={upper},workdir={work}")
    dev = f"{root}/dev"
    _mount(libc, "dev", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=0755,size=1m")
    for name in _DEVICES:
        Path(dev, name).touch()
        _mount(libc, f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
    ):
        os.symlink(target, f"{dev}/{name}")
    os.symlink("/proc/self/fd/2", f"{dev}/stderr")
    os.mkdir(f"{dev}/shm")
    _mount(libc, "shm", f"{dev}/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=1777,size={disk_bytes // 4}")
    os.mkdir(f"{dev}/pts", 0o755)
    return root


def _enter_root(libc: ctypes.CDLL, root: str) -> None:
    """As pid 1 of the new namespaces: /proc, /sys and ptys of its own; pivot into the new root."""
    # The overlay came from the host's side, so here it is a locked mount, which pivot_root refuses
    # as a new root: a bind of it made here is not.
    _mount(libc, root, root, None, _MS_BIND | _MS_REC)
    _mount(libc, "proc", f"{root}/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    with contextlib.suppress(OSError):  # ptys for tools that want one (script, expect); optional
        _mount(
            libc,
            "devpts",
            f"{root}/dev/pts",
            "devpts",
            _MS_NOSUID | _MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        )
        os.symlink("pts/ptmx", f"{root}/dev/ptmx")
    with contextlib.suppress(OSError):  # read-only, as Docker mounts it
        _mount(libc, "sysfs", f"{root}/sys", "sysfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    for masked in _MASKED:  # empty, as Docker masks them; /proc/tty/driver is the host root's only
        if os.path.isdir(f"{root}{masked}"):
            _mount(
                libc,
                "masked",
                f"{root}{masked}",
                "tmpfs",
                _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                "size=0",
            )
    # No user namespaces inside: one would hand back the capabilities the bounding set removes.
    Path(f"{root}/proc/sys/user/max_user_namespaces").write_text("0")
    os.chdir(root)
    _check(libc.syscall(_SYS_PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", _MNT_DETACH), "detaching the host's root")
    os.chdir("/")


def _launch(image: str, stage: str, uid_base: int, disk_bytes: int) -> int:
    """The launcher's work. Prints "pid N" (pid 1's host pid) and then "ready", or "error: ..."."""
    libc = _libc()
    to_parent, from_child = os.pipe()
    to_child, from_parent = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            _check(libc.unshare(_CLONE_NEWNS), "unshare (mount)")
            root = _mount_root(libc, image, stage, uid_base, disk_bytes)
            flags = (
                _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
            )
            _check(libc.unshare(flags), "unshare")
            os.write(from_child, b"u")
            if os.read(to_child, 1) != b"m":
                os._exit(3)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            init = os.fork()  # pid 1 of the new pid namespace
            if init == 0:
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
                _check(libc.sethostname(HOSTNAME.encode(), len(HOSTNAME)), "sethostname")
                _enter_root(libc, root)
                os.closerange(3, 1 << 16)
                with contextlib.suppress(OSError):
                    _loopback_up()
                # pid 1 holds what the rest hold, as in a container: a process with more
                # capabilities than its reader hides /proc/1 from it.
                last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
                for cap in set(range(last + 1)) - set(DOCKER_CAPS.values()):
                    _check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
                print("ready", flush=True)
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.execve("/usr/bin/python3", ["init", "-c", _REAPER], {"PATH": PATH})
            print(f"pid {init}", flush=True)
            _, status = os.waitpid(init, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        except BaseException as e:  # noqa: BLE001 - report anything, then go
            print(f"error: {e}", flush=True)
            os._exit(2)
    os.close(from_child)
    os.close(to_child)
    if os.read(to_parent, 1) != b"u":
        _, status = os.waitpid(child, 0)
        return 2
    try:
        Path(f"/proc/{child}/uid_map").write_text(f"0 {uid_base} {UID_COUNT}\n")
        Path(f"/proc/{child}/gid_map").write_text(f"0 {uid_base} {UID_COUNT}\n")
    except OSError as e:
        print(f"error: writing the user namespace's id maps: {e}", flush=True)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return 2
    os.write(from_parent, b"m")
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


# --- the host side ---------------------------------------------------------------------------------


class TaskSystem:
    """One running task system; ``enter_argv`` runs a command in it, ``close`` ends it.

    `image` is a root filesystem whose files belong to the host ids `uid_base`... (``osimage.py``).
    """

    def __init__(
        self, image: Path, *, uid_base: int, disk_bytes: int = 512 << 20, start_timeout: float = 30.0
    ):
        if os.geteuid() != 0:
            raise TaskSystemError(
                "OS tasks run as root in a task system, which maps 65536 uids into its user namespace: "
                "that needs the host's root. Run AgentLM as root (as its containers do) to run OS tasks"
            )
        for tool in ("nsenter", "setpriv"):
            if not shutil.which(tool, path=PATH):
                raise TaskSystemError(f"a task system needs util-linux's {tool}: apt-get install util-linux")
        self.image = image
        self.uid_base = uid_base
        self._stage = Path(tempfile.mkdtemp(prefix="agentlm-task-"))
        os.chmod(self._stage, 0o700)
        started = time.monotonic()
        self._launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentlm.agent.tools.tasksystem",
                str(image),
                str(self._stage),
                str(uid_base),
                str(disk_bytes),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": PATH, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.pid = 0  # pid 1 of the system, as the host sees it
        try:
            self._await_ready(started + start_timeout)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - started

    def _await_ready(self, deadline: float) -> None:
        assert self._launcher.stdout is not None
        fd, data = self._launcher.stdout.fileno(), b""
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if ready else b""
            data += chunk
            lines = data.decode(errors="replace").splitlines()
            for line in lines:
                if line.startswith("pid "):
                    self.pid = int(line.split()[1])
                elif line.startswith("error: "):
                    raise TaskSystemError(f"the task system did not start: {line[7:]}. {HOW_TO_FIX}")
            if "ready" in lines and self.pid:
                return
            if not chunk:
                why = "timed out" if not ready else f"the launcher exited: {data.decode(errors='replace')!r}"
                raise TaskSystemError(f"the task system did not start ({why}). {HOW_TO_FIX}")

    @property
    def alive(self) -> bool:
        return self._launcher.poll() is None

    def enter_argv(
        self, argv: Sequence[str], *, cwd: str = "/root", env: dict[str, str] | None = None
    ) -> list[str]:
        """The host command that runs `argv` inside the system as its root, with Docker's capabilities."""
        environment = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", **(env or {})}
        caps = ",".join(["-all", *(f"+{c}" for c in DOCKER_CAPS)])
        nsenter = shutil.which("nsenter", path=PATH) or "nsenter"
        return [
            nsenter, f"--target={self.pid}", "--user", "--mount", "--pid", "--net", "--ipc", "--uts",
            "--root", f"--wdns={cwd}", "--setuid=0", "--setgid=0", "--",
            "/usr/bin/setpriv", f"--bounding-set={caps}", "--inh-caps=-all", "--",
            "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in environment.items()), *argv,
        ]  # fmt: skip

    def close(self) -> None:
        """End every process in the system and drop its files; idempotent."""
        if self._launcher.poll() is None:
            if self.pid:  # pid 1 first: the kernel ends everything in its pid namespace, and then
                with contextlib.suppress(ProcessLookupError):  # each parent reaps its child in turn
                    os.kill(self.pid, signal.SIGKILL)
            try:
                self._launcher.wait(timeout=10 if self.pid else 0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._launcher.pid, signal.SIGKILL)
                self._launcher.wait(timeout=10)
        if self._launcher.stdout is not None:
            self._launcher.stdout.close()
        with contextlib.suppress(OSError):
            self._stage.rmdir()  # the tmpfs was mounted in the task's namespace only: this is empty

    def __enter__(self) -> TaskSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


HOW_TO_FIX = (
    "It needs Linux >= 5.11 (overlayfs in a user namespace), user namespaces (sysctl "
    "user.max_user_namespaces > 0) and, in a container, one allowed to create them (Docker: "
    "--security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt "
    "systempaths=unconfined, or --privileged)"
)


if __name__ == "__main__":
    image_dir, stage_dir, base, disk = sys.argv[1:5]
    sys.exit(_launch(image_dir, stage_dir, int(base), int(disk)))

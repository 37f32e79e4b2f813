"""Host uids for sandboxes, and finding and killing the processes that run as them.

When the host process is root, every session (and every one-off sandbox) runs ``bwrap`` as its
own random host uid (``ShellSettings.uid_base`` and up): RLIMIT_NPROC is not enforced for root,
and a dedicated uid makes the process cap per session and lets ``close()`` find and kill
everything the session started, whatever it did to its process group.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from agentlm.agent.tools.sandbox.config import ShellSettings

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


def kill_below(pid: int) -> None:
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


def allocate_uid(settings: ShellSettings) -> int:
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


def release_uid(uid: int | None) -> None:
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


def sweep_uid(uid: int) -> list[int]:
    """Kill whatever still runs as host `uid`; returns the pids that were left before the sweep."""
    left = processes_of(uid)
    deadline = time.monotonic() + 5
    while processes_of(uid) and time.monotonic() < deadline:
        _kill_uid(uid)
        time.sleep(0.02)
    return left

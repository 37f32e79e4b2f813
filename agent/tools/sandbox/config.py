"""What a sandbox is given and what a command gives back: limits, settings, binds, results, errors.

Plain data, shared by every module of the sandbox and by the shell tool; nothing here starts a
process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1 << 20
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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

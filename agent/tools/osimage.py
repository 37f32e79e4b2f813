"""The root filesystem OS tasks start from: a Debian userland like AgentBench's Ubuntu image.

AgentBench's OS tasks run in ``ubuntu`` with python3, pip, git, vim, curl, wget, unzip, zip and
tree installed (``os_dockerfiles/default``; ``packages`` adds npm, ``ubuntu`` is bare with one file:
``FLAVOURS``). ``ensure_image`` builds the same userland once with
``mmdebstrap`` (from the distribution's package mirror: no container registry needed), shifts every
file's owner into the task systems' block of host ids (so root inside a task owns the system's
files, and the host's root owns none of them), and keeps it under ``AGENTLM_HOME/os-images``.
Later calls find it there; a build interrupted halfway leaves nothing that looks finished.

Debian rather than Ubuntu because the Debian keyring and mirror are what a Debian or Ubuntu host
can reach without adding keys; the tasks use the userland (bash, coreutils, python3, the
tools above), which is the same in both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agentlm.agent.tools.tasksystem import HOSTNAME
from agentlm.paths import home

log = logging.getLogger(__name__)

# What AgentBench's default image installs, plus what a container's userland has that minbase
# leaves out (ps, kill, killall, less, file, xz) and sudo, which task references call as root.
PACKAGES = (
    "python3",
    "python3-pip",
    "git",
    "vim",
    "curl",
    "wget",
    "unzip",
    "zip",
    "tree",
    "ca-certificates",
    "procps",
    "psmisc",
    "less",
    "file",
    "xz-utils",
    "bzip2",
    "sudo",
    "cron",
    "bc",
)


@dataclass(frozen=True)
class ImageSpec:
    """What an image is built from; its name keys the cache."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = PACKAGES
    variant: str = "minbase"
    flavour: str = "default"  # which of AgentBench's images this one stands for
    files: tuple[tuple[str, str], ...] = ()  # (path under /, content) its Dockerfile writes

    @property
    def name(self) -> str:
        suffix = "" if self.flavour == "default" else f"-{self.flavour}"
        return f"debian-{self.suite}-agentbench{suffix}"


# AgentBench's three OS images (os_dockerfiles/), which a task names in "create": {"local": ...}.
# `ubuntu` is bare Ubuntu with one file; the tools of `default` are kept in it (a task that runs on
# bare Ubuntu runs with them too).
FLAVOURS = {
    "default": ImageSpec(),
    "packages": ImageSpec(flavour="packages", packages=(*PACKAGES, "npm")),
    "ubuntu": ImageSpec(flavour="ubuntu", files=(("file.txt", "tmp\n"),)),
}


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says what failed and what to do."""


def images_dir() -> Path:
    """AGENTLM_OS_IMAGES, or AGENTLM_HOME/os-images."""
    return Path(os.environ.get("AGENTLM_OS_IMAGES") or home() / "os-images").expanduser()


def image_path(spec: ImageSpec | None = None) -> Path:
    """Where the image's root filesystem is (built or not)."""
    return images_dir() / (spec or ImageSpec()).name / "rootfs"


def _shift_owners(root: Path, base: int) -> None:
    """Every file's uid and gid + `base`, set-id bits put back (chown clears them); device nodes go."""
    seen: set[tuple[int, int]] = set()  # hard links: one inode, shifted once
    for dirpath, dirnames, filenames in os.walk(root):
        # A directory is shifted once, as the dirpath of its own walk; a link to one is not walked.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for path in [dirpath, *(os.path.join(dirpath, n) for n in [*filenames, *links])]:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                os.unlink(path)  # a task system mounts its own /dev; no device node in the image
                continue
            os.lchown(path, st.st_uid + base, st.st_gid + base)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))


def build_image(target: Path, spec: ImageSpec, uid_base: int) -> None:
    """Build `spec` into `target` (which must not exist) with mmdebstrap, owners shifted to `uid_base`."""
    mmdebstrap = shutil.which("mmdebstrap")
    if not mmdebstrap:
        raise ImageBuildError("building the OS task image needs mmdebstrap: apt-get install mmdebstrap")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = [
        mmdebstrap,
        "--mode=root",
        f"--variant={spec.variant}",
        f"--include={','.join(spec.packages)}",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--customize-hook=rm -rf $1/var/cache/apt/archives/*.deb $1/var/lib/apt/lists/*_Packages",
        spec.suite,
        str(partial),
        spec.mirror,
    ]
    log.info("building the OS task image %s (once; a few minutes) into %s", spec.name, target)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ImageBuildError(
            f"mmdebstrap could not build the OS task image from {spec.mirror} (status {done.returncode}); "
            f"set AGENTLM_SHELL_IMAGE_MIRROR to a reachable Debian mirror. Its last lines:\n{tail}"
        )
    # As Docker writes them into a container: its hostname resolves (sudo asks), no name servers.
    (partial / "etc" / "hostname").write_text(f"{HOSTNAME}\n")
    (partial / "etc" / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost\n"
    )
    (partial / "etc" / "resolv.conf").write_text("")
    for relative, content in spec.files:
        (partial / relative).write_text(content)
    (partial / "root").chmod(0o700)
    _shift_owners(partial, uid_base)
    os.chown(partial, uid_base, uid_base)
    os.chmod(partial, 0o755)
    info = {**asdict(spec), "uid_base": uid_base, "seconds": round(time.monotonic() - started, 1)}
    (partial.parent / "image.json").write_text(json.dumps(info, indent=1) + "\n")
    partial.rename(target)
    log.info("built the OS task image in %.0f s", time.monotonic() - started)


def ensure_image(spec: ImageSpec | None = None, *, uid_base: int) -> Path:
    """The image's root filesystem, built on first use. Safe across processes (a file lock)."""
    spec = spec or ImageSpec()
    target = image_path(spec)
    info = target.parent / "image.json"
    if target.is_dir() and info.is_file():
        built = json.loads(info.read_text())
        if built.get("uid_base") == uid_base:
            return target
        raise ImageBuildError(
            f"the OS task image at {target} was built for host ids from {built.get('uid_base')}, not "
            f"{uid_base}; remove {target.parent} to rebuild it, or set AGENTLM_SHELL_SYSTEM_UID_BASE back"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if not target.is_dir():
            with contextlib.suppress(FileNotFoundError):
                info.unlink()
            build_image(target, spec, uid_base)
    return target

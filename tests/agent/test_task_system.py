"""Task systems (agent/tools/tasksystem.py): root inside, and nothing of the host within reach.

The escape cases run hostile commands as the task's root and judge on the host side wherever
there is one: a host file unchanged or absent, a host listener that accepted nothing, a host
process still alive, no process left once the system is closed. The last test runs the whole
AgentBench dev set and the cases again between two manifests of the host's system files.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from listeners import Listener
from tasksystems import image, needs_system

from agentlm.agent.envs.os import OSEnvironment
from agentlm.agent.tools.sandbox import SandboxLimits, ShellSession, ShellSettings, processes_of
from agentlm.agent.tools.tasksystem import UID_COUNT, TaskSystem

pytestmark = needs_system

SHARED = Path(__file__).resolve().parents[3] / "shared" / "agentbench"
BASE = ShellSettings().system_uid_base


def system(**kwargs) -> TaskSystem:
    return TaskSystem(image(), uid_base=BASE, **kwargs)


def host_processes_in_range() -> list[int]:
    """Host processes whose real uid is one of the task systems' (anything a system left running)."""
    return processes_of(range(BASE, BASE + UID_COUNT))


# --- what root inside can do -------------------------------------------------------------------------


def test_root_inside_manages_users_owners_and_the_whole_filesystem():
    with system() as s, ShellSession(system=s) as sh:
        assert sh.run("id -u; hostname").output == "0\ntask\n"
        out = sh.run(
            "useradd -m jack && groupadd crew && usermod -aG crew jack && mkdir -p /data/x "
            "&& chown -R jack:crew /data && chmod 750 /data && stat -c '%U:%G %a' /data && "
            "su - jack -c 'id -un; touch /data/x/y' && ls -l /data/x | tail -1 | cut -d' ' -f3"
        ).output
        assert out == "jack:crew 750\njack\njack\n"
        assert (
            sh.run("echo 1 > /usr/local/bin/t && echo 2 > /etc/t && cat /usr/local/bin/t /etc/t").output
            == "1\n2\n"
        )
        assert sh.run(
            "python3 -c 'print(6*7)'; git --version | cut -d' ' -f1; tree --version | cut -c1-4"
        ).output == ("42\ngit\ntree\n")


def test_a_system_starts_in_well_under_a_second_and_leaves_nothing_when_closed():
    s = system()
    try:
        assert s.start_seconds < 5  # ~0.1 s; benchmarks/os_tasks.py measures it
        with ShellSession(system=s) as sh:
            sh.run("sleep 1000 & setsid sleep 1000 & (nohup sleep 1000 >/dev/null 2>&1 &)")
            assert host_processes_in_range()
    finally:
        s.close()
    assert not s.alive and host_processes_in_range() == []
    assert not Path(f"/proc/{s.pid}").exists()


def test_a_timed_out_command_is_stopped_and_the_system_keeps_its_files():
    with system() as s, ShellSession(SandboxLimits(timeout_seconds=1), system=s) as sh:
        sh.run("echo kept > /opt/f")
        out = sh.run("sleep 60")
        assert out.timed_out and "stopped after 1 s" in out.note
        assert sh.run("cat /opt/f; pgrep -c -x sleep || true").output == "kept\n0\n"


def test_the_writable_layer_is_bounded():
    with system(disk_bytes=32 << 20) as s, ShellSession(system=s) as sh:
        out = sh.run("dd if=/dev/zero of=/big bs=1M count=100 2>&1 | grep -c 'No space left'; du -m /big")
        assert out.output.split()[:2] == ["1", "32"]


# --- escapes -----------------------------------------------------------------------------------------


class Host:
    def __init__(self) -> None:
        self.token = secrets.token_hex(6)
        self.secret = Path("/root") / f".agentlm-system-secret-{self.token}"
        self.secret.write_text(f"SECRET-{self.token}\n")
        self.listeners = [
            Listener(socket.AF_INET, socket.SOCK_STREAM, (a, 0)) for a in ("127.0.0.1", "0.0.0.0")
        ]
        self.victim = subprocess.Popen(["sleep", "600"])

    def close(self) -> None:
        self.victim.kill()
        self.victim.wait()
        self.secret.unlink(missing_ok=True)
        for listener in self.listeners:
            listener.close()


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    h = Host()
    yield h
    h.close()


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


Case = Callable[[ShellSession, Host], str | None]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


@case("mount")
def _(sh: ShellSession, host: Host) -> str | None:
    sh.run("mount -t tmpfs x /mnt; mount --bind / /mnt; mount -t proc p /mnt; mount -o remount,rw /sys")
    mounted = sh.run(
        "grep -c ' /mnt ' /proc/self/mountinfo; grep ' /sys ' /proc/self/mountinfo | grep -c ' rw,'"
    )
    return None if mounted.output.split() == ["0", "0"] else f"mounted: {mounted.output!r}"


@case("unshare")
def _(sh: ShellSession, host: Host) -> str | None:
    out = sh.run("for f in -U -Ur -m -n -p -i -u; do unshare $f true 2>/dev/null && echo UNSHARED$f; done")
    return out.output.strip() or None


@case("setns")
def _(sh: ShellSession, host: Host) -> str | None:
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for ns in os.listdir('/proc/1/ns'):\n"
        "    fd = os.open(f'/proc/1/ns/{ns}', os.O_RDONLY)\n"
        "    if libc.setns(fd, 0) == 0: print('ENTERED', ns)\n"
    )
    out = sh.run(f"python3 -c {shlex.quote(code)}; nsenter -t 1 -m -u true && echo ENTERED-nsenter")
    return out.output.strip() if "ENTERED" in out.output else None


@case("proc-sys-and-sys")
def _(sh: ShellSession, host: Host) -> str | None:
    watched = [
        p
        for p in ("/proc/sys/kernel/sysrq", "/proc/sys/vm/swappiness", "/proc/sys/kernel/core_pattern")
        if Path(p).exists()
    ]
    before = {p: Path(p).read_text() for p in watched}
    sh.run(
        "echo 0 > /proc/sys/kernel/sysrq; echo 7 > /proc/sys/vm/swappiness; echo '|/tmp/x' > "
        "/proc/sys/kernel/core_pattern; echo never > /sys/kernel/mm/transparent_hugepage/enabled; "
        "echo 1 > /proc/sysrq-trigger 2>/dev/null; sysctl -w kernel.domainname=x"
    )
    changed = [p for p in watched if Path(p).read_text() != before[p]]
    return f"host settings changed: {changed}" if changed else None


@case("kernel-modules")
def _(sh: ShellSession, host: Host) -> str | None:
    code = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('LOADED' if libc.syscall(175, b'\\0' * 64, 64, b'') == 0 else ctypes.get_errno())\n"
        "print('DELETED' if libc.syscall(176, b'loop', 0) == 0 else ctypes.get_errno())\n"
    )
    out = sh.run(f"python3 -c {shlex.quote(code)}")
    return out.output if "LOADED" in out.output or "DELETED" in out.output else None


@case("network-to-the-host")
def _(sh: ShellSession, host: Host) -> str | None:
    before = [listener.hits for listener in host.listeners]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the host's outgoing address
        ip = probe.getsockname()[0]
    for listener in host.listeners:
        for address in ("127.0.0.1", ip):
            sh.run(
                f"curl -s -m 2 http://{address}:{listener.port}/; echo > /dev/tcp/{address}/{listener.port}"
            )
    raw = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.sendto(b'\\x08' + b'\\0' * 7, ('%s', 0))"
    sh.run(f'python3 -c "{raw % ip}"; curl -s -m 2 http://deb.debian.org/ && echo ONLINE')
    hits = [listener.hits for listener in host.listeners]
    return f"connections reached the host: {before} -> {hits}" if hits != before else None


@case("chroot-out")
def _(sh: ShellSession, host: Host) -> str | None:
    code = (
        "import os\nos.makedirs('/jail', exist_ok=True)\nfd = os.open('/', os.O_RDONLY)\n"
        "os.chroot('/jail')\nos.fchdir(fd)\nfor _ in range(64): os.chdir('..')\nos.chroot('.')\n"
        f"print(open('{host.secret}').read() if os.path.exists('{host.secret}') else 'inside')\n"
    )
    out = sh.run(f"python3 -c {shlex.quote(code)}; cat {host.secret}; cat /proc/1/root{host.secret}")
    return "read the host's secret" if f"SECRET-{host.token}" in out.output else None


@case("device-nodes")
def _(sh: ShellSession, host: Host) -> str | None:
    dev = os.stat("/").st_dev
    out = sh.run(
        f"mknod /tmp/disk b {os.major(dev)} {os.minor(dev)} && head -c 4096 /tmp/disk | wc -c; "
        "mknod /tmp/mem c 1 1 && head -c 16 /tmp/mem | wc -c"
    )
    if any(line.strip() in ("4096", "16") for line in out.output.splitlines()):
        return "read a host device through a node made inside"
    extra = set(sh.run("ls /dev").output.split()) - {
        "fd",
        "full",
        "null",
        "pts",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "urandom",
        "zero",
        "ptmx",
    }
    return f"host devices visible in /dev: {sorted(extra)}" if extra else None


@case("host-secrets")
def _(sh: ShellSession, host: Host) -> str | None:
    out = sh.run(
        f"cat {host.secret} /root/.agentlm-system-secret-* 2>&1; cat /etc/shadow; env; ls /work /shared 2>&1"
    )
    leaks = []
    if f"SECRET-{host.token}" in out.output:
        leaks.append("the host's /root")
    if Path("/etc/shadow").read_text().strip() in out.output:
        leaks.append("the host's /etc/shadow")
    if "AGENTLM_HOME" in out.output or "No such file" not in out.output:
        leaks.append("the host's environment or repository")
    return ", ".join(leaks) or None


@case("host-processes")
def _(sh: ShellSession, host: Host) -> str | None:
    sh.run(f"kill -9 -1; kill -9 {host.victim.pid}; pkill -9 sleep")
    alive = host.victim.poll() is None
    seen = sh.run("ps -e | wc -l").output
    return None if alive and int(seen) < 10 else f"victim alive: {alive}; processes seen: {seen}"


@case("the-image-stays-as-built")
def _(sh: ShellSession, host: Host) -> str | None:
    lower = image() / "usr" / "bin" / "ls"
    before = _digest(lower)
    sh.run("echo x > /usr/bin/ls; rm -rf /usr/lib/python3*; chmod 777 /etc; chown 1:1 /usr")
    st = (image() / "etc").stat()
    changed = (
        _digest(lower) != before
        or oct(st.st_mode & 0o777) != "0o755"
        or not list(image().glob("usr/lib/python3*"))
    )
    return "the image's files changed" if changed else None


@case("other-tasks-systems")
def _(sh: ShellSession, host: Host) -> str | None:
    with system() as other, ShellSession(system=other) as neighbour:
        neighbour.run(f"echo NEIGHBOUR-{host.token} > /root/mine; sleep 300 &")
        out = sh.run(
            f"cat /proc/*/root/root/mine 2>/dev/null; grep -rs NEIGHBOUR-{host.token} /root /tmp /proc/*/cmdline; "
            "ps -e | grep -c 'sleep 300'"
        )
    return "saw another task's system" if f"NEIGHBOUR-{host.token}" in out.output else None


NAMES = sorted(CASES)


def run_case(name: str, host: Host) -> str | None:
    with system() as s, ShellSession(SandboxLimits(timeout_seconds=20), system=s) as sh:
        escaped = CASES[name](sh, host)
    left = host_processes_in_range()
    return escaped or (f"processes left after the system closed: {left}" if left else None)


@pytest.mark.parametrize("name", NAMES)
def test_no_escape(name: str, host: Host):
    escaped = run_case(name, host)
    assert escaped is None, f"{name}: {escaped}"


# --- the host, before and after ---------------------------------------------------------------------

WATCHED = ("/etc", "/usr", "/opt", "/home", "/srv", "/var/lib", "/root")
SKIPPED = ("/root/.agentlm/models", "/root/.cache", "/var/lib/apt", "/var/lib/dpkg")


def manifest() -> dict[str, tuple[int, int, int, int]]:
    """Every file and directory under the watched host folders: size, mode, owner, mtime."""
    found = {}
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not os.path.join(dirpath, d).startswith(SKIPPED)]
            for name in [*dirnames, *filenames]:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                found[path] = (st.st_size, st.st_mode, st.st_uid, st.st_mtime_ns)
    return found


def test_no_host_file_changes_across_the_os_suite(host: Host, tmp_path: Path):
    before = manifest()
    env = OSEnvironment()
    dev = env.load(SHARED / "os_dev.json")
    rewards = [reward for _, reward, _ in env.verify(dev)]
    escapes = {name: run_case(name, host) for name in NAMES}
    after = manifest()
    ours = {str(host.secret)}
    changed = sorted(
        p for p in before.keys() | after.keys() if before.get(p) != after.get(p) and p not in ours
    )
    assert rewards == [1.0] * 26 and escapes == dict.fromkeys(NAMES)
    assert changed == [], f"{len(changed)} host files changed: {changed[:20]}"

"""The shell sandbox's escape suite: each case tries one way out and checks the host for its effect.

A case runs its command in a fresh ShellSession and returns what escaped (a string) or None, judged
on the host side wherever there is one: a file absent on the host, a listening socket that
accepted nothing, a host process still alive, a host file unchanged. The last test sums them up.
"""

from __future__ import annotations

import hashlib
import os
import resource
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from listeners import Listener

from agentlm.agent.tools.sandbox import (
    CommandResult,
    SandboxLimits,
    SandboxUnavailableError,
    ShellSession,
    check_sandbox,
    processes_of,
)

REPO = Path(__file__).resolve().parents[2]

try:
    check_sandbox()
    _unavailable = None
except SandboxUnavailableError as e:
    _unavailable = str(e)

pytestmark = [
    pytest.mark.skipif(_unavailable is not None, reason=f"no bubblewrap sandbox here: {_unavailable}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the suite checks per-session uids, which need a root host"),
]


def _host_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


@dataclass
class Ctx:
    session: ShellSession
    token: str
    tcp: Listener
    tcp_any: Listener
    udp: Listener
    abstract: Listener
    host_secret: Path
    host_pid: int
    scratch: list[Path] = field(default_factory=list)

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        return self.session.run(command, timeout=timeout)


@pytest.fixture(scope="module")
def host():
    token = secrets.token_hex(6)
    tcp = Listener(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0))
    tcp_any = Listener(socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 0))
    udp = Listener(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0))
    abstract = Listener(socket.AF_UNIX, socket.SOCK_STREAM, f"\0agentlm-escape-{token}")
    secret = Path("/root") / f".agentlm-escape-secret-{token}"
    secret.write_text(f"SECRET-{token}\n")
    victim = subprocess.Popen(["sleep", "600"])
    os.environ["AGENTLM_ESCAPE_SECRET"] = f"ENV-{token}"
    yield dict(
        token=token, tcp=tcp, tcp_any=tcp_any, udp=udp, abstract=abstract, secret=secret, victim=victim
    )
    os.environ.pop("AGENTLM_ESCAPE_SECRET", None)
    victim.kill()
    victim.wait()
    secret.unlink(missing_ok=True)
    for listener in (tcp, tcp_any, udp, abstract):
        listener.close()
    for leftover in REPO.glob(f"escape-{token}*"):
        leftover.unlink()


# --- the cases: each returns a description of what escaped, or None --------------------------------

Check = Callable[[Ctx], str | None]
CASES: dict[str, tuple[Check, SandboxLimits | None]] = {}
RESULTS: dict[str, str | None] = {}


def case(name: str, limits: SandboxLimits | None = None) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CASES[name] = (fn, limits)
        return fn

    return register


def _hits_after(ctx: Ctx, listener: Listener, command: str) -> str | None:
    before = listener.hits
    ctx.run(command, timeout=8)
    time.sleep(0.2)
    return f"{listener.hits - before} connections reached the host" if listener.hits != before else None


# network


@case("net-curl-host-loopback")
def _(ctx: Ctx) -> str | None:
    return _hits_after(ctx, ctx.tcp, f"curl -s -m 2 http://127.0.0.1:{ctx.tcp.port}/")


@case("net-wget-host-loopback")
def _(ctx: Ctx) -> str | None:
    return _hits_after(ctx, ctx.tcp, f"wget -q -T 2 -t 1 -O- http://127.0.0.1:{ctx.tcp.port}/")


@case("net-python-socket-loopback")
def _(ctx: Ctx) -> str | None:
    code = f"import socket; socket.create_connection(('127.0.0.1', {ctx.tcp.port}), timeout=2)"
    return _hits_after(ctx, ctx.tcp, f'python3 -c "{code}"')


@case("net-dev-tcp")
def _(ctx: Ctx) -> str | None:
    return _hits_after(ctx, ctx.tcp, f"exec 3<>/dev/tcp/127.0.0.1/{ctx.tcp.port}; echo x >&3")


@case("net-host-external-ip")
def _(ctx: Ctx) -> str | None:
    ip = _host_ip() or "192.0.2.2"
    return _hits_after(ctx, ctx.tcp_any, f"curl -s -m 2 http://{ip}:{ctx.tcp_any.port}/")


@case("net-udp-loopback")
def _(ctx: Ctx) -> str | None:
    code = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {ctx.udp.port}))"
    return _hits_after(ctx, ctx.udp, f'python3 -c "{code}"')


@case("net-abstract-unix-socket")
def _(ctx: Ctx) -> str | None:
    code = (
        "import socket; s = socket.socket(socket.AF_UNIX); "
        f"s.connect(bytes([0]) + b'agentlm-escape-{ctx.token}')"
    )
    return _hits_after(ctx, ctx.abstract, f'python3 -c "{code}"')


@case("net-dns")
def _(ctx: Ctx) -> str | None:
    out = ctx.run(
        "getent hosts example.com; python3 -c \"import socket; print(socket.gethostbyname('example.com'))\""
    )
    return f"resolved a name: {out.output!r}" if any(c.isdigit() for c in out.output.split("\n")[0]) else None


@case("net-interfaces")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("tail -n +3 /proc/net/dev | cut -d: -f1")
    names = {n.strip() for n in out.output.split()}
    return f"network interfaces visible: {names}" if names - {"lo"} else None


# filesystem writes outside the scratch directories


def _absent(path: Path, ctx: Ctx, command: str) -> str | None:
    ctx.run(command)
    return f"{path} was written on the host" if path.exists() else None


@case("fs-write-etc")
def _(ctx: Ctx) -> str | None:
    return _absent(Path(f"/etc/escape-{ctx.token}"), ctx, f"echo x > /etc/escape-{ctx.token}")


@case("fs-write-usr")
def _(ctx: Ctx) -> str | None:
    return _absent(Path(f"/usr/escape-{ctx.token}"), ctx, f"touch /usr/escape-{ctx.token}")


@case("fs-write-bin")
def _(ctx: Ctx) -> str | None:
    return _absent(Path(f"/usr/bin/escape-{ctx.token}"), ctx, f"cp /bin/true /bin/escape-{ctx.token}")


@case("fs-write-var")
def _(ctx: Ctx) -> str | None:
    cmd = f"mkdir -p /var/tmp && echo x > /var/tmp/escape-{ctx.token}"
    return _absent(Path(f"/var/tmp/escape-{ctx.token}"), ctx, cmd)


@case("fs-write-repo")
def _(ctx: Ctx) -> str | None:
    target = REPO / f"escape-{ctx.token}"
    return _absent(target, ctx, f"mkdir -p {REPO} && echo x > {target}")


@case("fs-write-python-etc")
def _(ctx: Ctx) -> str | None:
    target = Path(f"/etc/escape-py-{ctx.token}")
    return _absent(target, ctx, f"python3 -c \"open('{target}', 'w').write('x')\"")


@case("fs-write-proc-sys")
def _(ctx: Ctx) -> str | None:
    before = Path("/proc/sys/kernel/threads-max").read_text()
    ctx.run("echo 1234 > /proc/sys/kernel/threads-max; sysctl -w kernel.threads-max=1234")
    after = Path("/proc/sys/kernel/threads-max").read_text()
    return f"host threads-max changed to {after}" if after != before else None


@case("fs-write-proc-1-root")
def _(ctx: Ctx) -> str | None:
    target = Path(f"/etc/escape-p1-{ctx.token}")
    return _absent(target, ctx, f"echo x > /proc/1/root{target}")


@case("fs-mknod-device")
def _(ctx: Ctx) -> str | None:
    ctx.run("mknod /root/sda b 8 0; mknod /root/mem c 1 1; mknod /tmp/sda b 8 0")
    nodes = [p for p in ctx.session.root_dir.iterdir() if p.is_block_device() or p.is_char_device()]
    return f"device nodes created on the host: {nodes}" if nodes else None


@case("fs-symlink-out-of-scratch")
def _(ctx: Ctx) -> str | None:
    digest = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    ctx.run("ln -s /etc/passwd /root/pw; echo 'evil::0:0::/:/bin/sh' >> /root/pw")
    target = REPO / f"escape-link-{ctx.token}"
    ctx.run(f"ln -s {target} /root/out; echo x > /root/out")
    if hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() != digest:
        return "the host's /etc/passwd changed through a symlink"
    return f"{target} was written through a symlink" if target.exists() else None


@case("fs-hardlink-system-file")
def _(ctx: Ctx) -> str | None:
    ctx.run("ln /etc/passwd /root/hl; ln /usr/bin/bash /root/hb")
    shared = [
        p
        for p in ctx.session.root_dir.iterdir()
        if p.exists() and p.stat().st_ino in {os.stat("/etc/passwd").st_ino, os.stat("/usr/bin/bash").st_ino}
    ]
    return f"hard links to system files in the scratch dir: {shared}" if shared else None


@case("fs-chmod-readonly-bind")
def _(ctx: Ctx) -> str | None:
    before = os.stat("/usr/bin/bash").st_mode, os.stat("/etc/hostname").st_mode
    ctx.run("chmod 777 /usr/bin/bash; chmod 666 /etc/hostname; chmod u+s /usr/bin/bash")
    after = os.stat("/usr/bin/bash").st_mode, os.stat("/etc/hostname").st_mode
    return f"modes changed {before} -> {after}" if after != before else None


@case("fs-mount")
def _(ctx: Ctx) -> str | None:
    out = ctx.run(
        "mkdir -p /root/m && mount -t tmpfs none /root/m && echo MOUNTED; mount --bind / /root/m && echo MOUNTED"
    )
    return "mount succeeded" if "MOUNTED" in out.output else None


@case("fs-remount-rw")
def _(ctx: Ctx) -> str | None:
    out = ctx.run(f"mount -o remount,rw /usr && touch /usr/escape-rw-{ctx.token} && echo REMOUNTED")
    if Path(f"/usr/escape-rw-{ctx.token}").exists() or "REMOUNTED" in out.output:
        return "remounted /usr read-write"
    return None


@case("fs-chroot")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("chroot / /bin/true && echo CHROOTED")
    return "chroot succeeded" if "CHROOTED" in out.output else None


@case("fs-new-user-namespace")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("unshare -r id -u && echo UNSHARED; unshare -rm true && echo UNSHARED")
    return "created a user namespace inside the sandbox" if "UNSHARED" in out.output else None


@case("fs-other-session-scratch")
def _(ctx: Ctx) -> str | None:
    with ShellSession() as other:
        victim = other.root_dir / f"escape-{ctx.token}"
        ctx.run(f"echo x > {victim}; echo x > {other.root_dir}/../home/escape-{ctx.token}")
        if victim.exists() or (other.home_dir / f"escape-{ctx.token}").exists():
            return "wrote into another session's scratch directory"
    return None


@case("fs-tmp-is-private")
def _(ctx: Ctx) -> str | None:
    ctx.run(f"echo x > /tmp/escape-{ctx.token}")
    return "/tmp inside is the host's /tmp" if Path(f"/tmp/escape-{ctx.token}").exists() else None


# host secrets


@case("secret-host-root")
def _(ctx: Ctx) -> str | None:
    out = ctx.run(f"cat {ctx.host_secret}; ls -a /root; cat /root/.bash_history /root/.ssh/* 2>&1")
    listed = ctx.host_secret.name in out.output.splitlines()
    return "read the host's /root" if f"SECRET-{ctx.token}" in out.output or listed else None


@case("secret-repo-files")
def _(ctx: Ctx) -> str | None:
    out = ctx.run(f"cat {REPO}/pyproject.toml; ls {REPO}")
    listed = "pyproject.toml" in out.output.splitlines()
    return "read the repository" if "[project]" in out.output or listed else None


@case("secret-etc-shadow")
def _(ctx: Ctx) -> str | None:
    if not Path("/etc/shadow").exists():
        return None
    out = ctx.run("cat /etc/shadow; head -1 /etc/shadow")
    return "read /etc/shadow" if "root:" in out.output else None


@case("secret-host-environment")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("env; cat /proc/self/environ | tr '\\0' '\\n'")
    return "saw the host's environment" if f"ENV-{ctx.token}" in out.output else None


@case("secret-host-processes")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '; ls /proc | grep -c '^[0-9]'")
    return "saw host processes" if "pytest" in out.output or "sleep 600" in out.output else None


# privileges


@case("priv-not-root")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("id -u")
    return "runs as uid 0 inside" if out.output.strip() == "0" else None


@case("priv-no-capabilities")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status")
    values = [line.split()[1] for line in out.output.splitlines()]
    return f"capabilities held: {values}" if len(values) != 3 or any(int(v, 16) for v in values) else None


@case("priv-no-new-privs")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("grep NoNewPrivs /proc/self/status")
    return "no_new_privs is not set" if out.output.split() != ["NoNewPrivs:", "1"] else None


@case("priv-su-sudo")
def _(ctx: Ctx) -> str | None:
    target = Path(f"/etc/escape-su-{ctx.token}")
    out = ctx.run(f"echo '' | su root -c 'touch {target}; id -u'; sudo -n id -u; sudo -n touch {target}")
    if target.exists() or any(line.strip() == "0" for line in out.output.splitlines()):
        return "su/sudo gave root"
    return None


@case("priv-setuid-binary")
def _(ctx: Ctx) -> str | None:
    # A setuid-root binary must run with the caller's uid (no_new_privs, and root is not mapped).
    out = ctx.run(
        "for b in /usr/bin/passwd /usr/bin/chsh /usr/bin/newgrp /usr/bin/mount; do [ -u $b ] && echo $b; done"
    )
    found = out.output.split()
    if not found:
        return None
    out = ctx.run(f"{found[0]} --help >/dev/null 2>&1; python3 -c 'import os; os.setuid(0)' && echo ROOT")
    return "became root" if "ROOT" in out.output else None


@case("priv-raise-rlimits")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("ulimit -Hu unlimited && echo RAISED; ulimit -Hv unlimited && echo RAISED; ulimit -u")
    return "raised a hard rlimit" if "RAISED" in out.output else None


@case("priv-sethostname")
def _(ctx: Ctx) -> str | None:
    before = socket.gethostname()
    ctx.run("hostname evil-host; python3 -c \"import socket; socket.sethostname('evil-host')\"")
    return "changed the host's hostname" if socket.gethostname() != before else None


# resources


@case("res-fork-bomb", SandboxLimits(timeout_seconds=3, processes=32))
def _(ctx: Ctx) -> str | None:
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(processes_of(ctx.session.uid)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = ctx.run(":(){ :|:& };:; sleep 2", timeout=3)
    finally:
        stop.set()
        watcher.join()
    # 32 plus bwrap's own two processes, which count against the same uid.
    if peak > 34:
        return f"{peak} processes at once under a limit of 32"
    if peak < 20:
        return f"the bomb reached only {peak} processes (the case tests nothing)"
    if result.timed_out and processes_of(ctx.session.uid):
        return "the fork bomb outlived the timeout"
    return None


@case("res-memory-bomb", SandboxLimits(memory_bytes=256 * 1024 * 1024))
def _(ctx: Ctx) -> str | None:
    out = ctx.run("python3 -c 'x = bytearray(1 << 30); print(\"ALLOCATED\")'; echo status=$?")
    return "allocated 1 GiB under a 256 MiB limit" if "ALLOCATED" in out.output else None


@case("res-cpu-burn", SandboxLimits(cpu_seconds=1, timeout_seconds=20))
def _(ctx: Ctx) -> str | None:
    started = time.monotonic()
    out = ctx.run("python3 -c 'while True: pass'; echo status=$?")
    took = time.monotonic() - started
    return None if "status=15" in out.output and took < 10 else f"CPU burn ran {took:.1f} s: {out.output!r}"


@case("res-sleep-past-timeout")
def _(ctx: Ctx) -> str | None:
    started = time.monotonic()
    out = ctx.run("sleep 600", timeout=1)
    took = time.monotonic() - started
    if not out.timed_out or took > 3:
        return f"sleep was not stopped ({took:.1f} s)"
    left = processes_of(ctx.session.uid)
    return f"processes left after the timeout kill: {left}" if left else None


@case("res-output-bomb")
def _(ctx: Ctx) -> str | None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    out = ctx.run("yes | head -c 100M", timeout=30)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    cap = ctx.session.limits.output_bytes
    if len(out.output.encode()) > cap or not out.truncated or out.output_total != 100 * 1024 * 1024:
        return f"output not capped: kept {len(out.output)}, total {out.output_total}"
    return f"host memory grew by {grown} KiB" if grown > 48 * 1024 else None


@case("res-file-size-bomb", SandboxLimits(file_bytes=8 * 1024 * 1024))
def _(ctx: Ctx) -> str | None:
    ctx.run(
        "head -c 100M /dev/zero > /root/big; python3 -c \"open('/home/big', 'wb').write(bytes(50 << 20))\""
    )
    sizes = [
        p.stat().st_size for p in (ctx.session.root_dir / "big", ctx.session.home_dir / "big") if p.exists()
    ]
    return f"files of {sizes} bytes under an 8 MiB limit" if any(s > 8 * 1024 * 1024 for s in sizes) else None


@case("res-tmp-fill")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("for i in 1 2 3 4; do head -c 30M /dev/zero > /tmp/f$i; done; du -sm /tmp | cut -f1")
    used = int(out.output.split()[-1])
    return f"/tmp holds {used} MiB past its 64 MiB size" if used > 64 else None


@case("res-fd-exhaustion")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("python3 -c \"fs = [open('/dev/null') for _ in range(100000)]\" 2>&1 | tail -1; echo next")
    if "Too many open files" not in out.output:
        return f"opened 100000 files: {out.output!r}"
    return None if ctx.run("echo alive").output == "alive\n" else "the shell broke after fd exhaustion"


@case("proc-background-outlives-close")
def _(ctx: Ctx) -> str | None:
    ctx.run("sleep 1000 & nohup sleep 1001 >/dev/null 2>&1 & setsid sleep 1002 & (sleep 1003 &) ; disown -a")
    uid = ctx.session.uid
    if len(processes_of(uid)) < 4:
        return "the background processes did not start (the case tests nothing)"
    ctx.session.close()
    left = processes_of(uid)
    return f"processes left after close(): {left}" if left else None


@case("proc-kill-parent-shell")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("kill -9 $$")
    if out.note is None or "exited" not in out.note:
        return f"the shell's death was not reported: {out}"
    if ctx.run("echo again").output != "again\n":
        return "the session did not come back"
    return None


@case("proc-kill-host-pid")
def _(ctx: Ctx) -> str | None:
    ctx.run(f"kill -9 {ctx.host_pid}; kill -9 -1; pkill -9 sleep; kill -9 {os.getpid()}")
    time.sleep(0.1)
    alive = (
        Path(f"/proc/{ctx.host_pid}").exists()
        and "Z" not in Path(f"/proc/{ctx.host_pid}/stat").read_text().split()[2]
    )
    return None if alive else "killed a host process"


@case("proc-ptrace-host")
def _(ctx: Ctx) -> str | None:
    code = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
        f"print('ATTACHED' if libc.ptrace(16, {ctx.host_pid}, 0, 0) == 0 else 'refused')"
    )
    out = ctx.run(f'python3 -c "{code}"; strace -p {ctx.host_pid} -e trace=none & sleep 0.5; kill %1')
    state = Path(f"/proc/{ctx.host_pid}/stat").read_text().split()[2]
    return "ptrace attached to a host process" if "ATTACHED" in out.output or state in "tT" else None


@case("proc-pid-namespace")
def _(ctx: Ctx) -> str | None:
    out = ctx.run("ls /proc | grep -E '^[0-9]+$' | wc -l")
    count = int(out.output.split()[-1])
    return f"{count} pids visible inside (host pids leak into the namespace)" if count > 10 else None


NAMES = sorted(CASES)


def _run_case(name: str, host: dict) -> str | None:
    check, limits = CASES[name]
    with ShellSession(limits) as session:
        ctx = Ctx(
            session=session,
            token=host["token"],
            tcp=host["tcp"],
            tcp_any=host["tcp_any"],
            udp=host["udp"],
            abstract=host["abstract"],
            host_secret=host["secret"],
            host_pid=host["victim"].pid,
        )
        uid = session.uid
        escaped = check(ctx)
    left = processes_of(uid)
    if escaped is None and left:
        escaped = f"processes of the session's uid left after close(): {left}"
    RESULTS[name] = escaped
    return escaped


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", NAMES)
def test_no_escape(name: str, host: dict):
    escaped = _run_case(name, host)
    assert escaped is None, f"{name}: {escaped}"


def test_summary_zero_escapes(host: dict):
    for name in NAMES:
        if name not in RESULTS:  # run alone (-k): play the cases the run skipped
            _run_case(name, host)
    escapes = {n: e for n, e in RESULTS.items() if e is not None}
    assert len(RESULTS) == len(CASES)
    assert escapes == {}, f"{len(escapes)} escapes: {escapes}"

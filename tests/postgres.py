"""A real PostgreSQL server for the `postgres` tests: the apt package's binaries, a cluster of the
test's own in a temporary directory, on a free port of 127.0.0.1.

    with postgres_server() as server:
        url = server.create_database()        # postgresql://agentlm@127.0.0.1:PORT/t_1a2b...

initdb and the server refuse to run as root, so as root they run as the `postgres` user the apt
package created (runuser), in a directory under /tmp that user owns. Nothing is mocked and no
system service is touched: the cluster is stopped and deleted when the block ends.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from agentlm.processes import free_port

USER = "agentlm"  # the cluster's superuser; local connections are trusted


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl (the newest installed version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).resolve().parent if which else None


@dataclass
class PostgresServer:
    port: int
    data: Path
    bindir: Path
    options: str  # the server's command line: port, socket directory, listen address
    run_as: list[str]  # the command prefix that runs a program as the cluster's owner

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def start(self) -> None:
        log = self.data.parent / "server.log"
        started = self._pg_ctl("-l", str(log), "-o", self.options, "-t", "120", "start")
        if started.returncode:
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{_tail(log)}")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        command = [*self.run_as, self.bindir / "pg_ctl", "-D", self.data, "-w", *args]
        return subprocess.run(command, capture_output=True, text=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL is not installed: apt install postgresql (scripts/setup.sh does)")
    # Under /tmp, whatever TMPDIR says: the server's owner must reach it through every parent
    # directory, and its socket path must stay under the 107 bytes a Unix socket name may have.
    root = Path(tempfile.mkdtemp(prefix="agentlm-pg-", dir="/tmp"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    server = PostgresServer(port, root / "data", bindir, options, run_as)
    try:
        subprocess.run(
            [
                *run_as,
                bindir / "initdb",
                "-D",
                server.data,
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no server log)"

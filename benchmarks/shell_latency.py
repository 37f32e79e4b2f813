"""Latency of one command in the bubblewrap shell sandbox, against a plain subprocess.

Times `--command` (median of `--repeats`) in one persistent sandboxed ``ShellSession``, in a fresh
sandbox per command (``run_isolated``, as the OS environment's checks run), and as a plain
``subprocess.run(["bash", "-c", command])``; and the session's first command, sandbox start
included. Needs a working bubblewrap (``check_sandbox``). Prints the figures and their ratios.

    .venv/bin/python benchmarks/shell_latency.py [--command true] [--repeats 20] [--json F]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from agentlm.agent.tools.sandbox import ShellSession, ShellSettings, run_isolated


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", default="true", help="bash code to time")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    report = measure_latency(args.command, args.repeats)
    plain = report.plain_s
    print(f"{report.command!r}, median of {report.repeats}: plain subprocess {1000 * plain:.2f} ms")
    print(
        f"  persistent sandboxed session: {1000 * report.persistent_s:.2f} ms = {report.persistent_s / plain:.2f}x plain"
    )
    print(
        f"  a fresh sandbox per command:  {1000 * report.fresh_s:.2f} ms = {report.fresh_s / plain:.2f}x plain"
    )
    print(f"  the session's first command (sandbox start included): {1000 * report.first_command_s:.2f} ms")
    if args.json:
        args.json.write_text(report.model_dump_json(indent=1))


if __name__ == "__main__":
    main()

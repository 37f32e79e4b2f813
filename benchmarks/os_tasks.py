"""AgentBench OS tasks in task systems (agent/tools/tasksystem.py), in one run.

1. Start-up: a new task system per task (namespaces, overlay over the image, pivot), timed after
   the first; and a command in it, against a plain ``subprocess.run(["bash", "-c", ...])``.
   Goal: at most 300 ms per system.
2. References: every task's reference solution in its own system, scored as AgentBench scores
   it (``agentlm tasks verify``), on each OS task file given (default: the shared dev set and task
   files 4 and 7). Goal: at least 95 % pass.

    .venv/bin/python benchmarks/os_tasks.py [--starts 20] [--tasks FILE ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from agentlm.agent.envs.os import OSEnvironment
from agentlm.agent.tools.sandbox import ShellSession, ShellSettings
from agentlm.agent.tools.tasksystem import TaskSystem

SHARED = Path(__file__).resolve().parents[2] / "shared" / "agentbench"
DEFAULT_TASKS = [SHARED / "os_dev.json", *sorted((SHARED / "os_sets").glob("os_*.json"))]


def startup(starts: int) -> dict[str, float]:
    env = OSEnvironment()
    image, base = env.image(), ShellSettings().system_uid_base
    TaskSystem(image, uid_base=base).close()  # the first: page cache, imports
    start_s, command_s = [], []
    for _ in range(starts):
        began = time.perf_counter()
        with TaskSystem(image, uid_base=base) as system:
            start_s.append(time.perf_counter() - began)
            with ShellSession(system=system) as shell:
                shell.run("true")  # the shell itself
                began = time.perf_counter()
                shell.run("ls / | wc -l")
                command_s.append(time.perf_counter() - began)
    plain = []
    for _ in range(starts):
        began = time.perf_counter()
        subprocess.run(["bash", "-c", "ls / | wc -l"], capture_output=True, check=True)
        plain.append(time.perf_counter() - began)
    return {
        "system_start_ms": 1000 * statistics.median(start_s),
        "system_start_p95_ms": 1000 * sorted(start_s)[int(0.95 * (len(start_s) - 1))],
        "command_in_system_ms": 1000 * statistics.median(command_s),
        "plain_subprocess_ms": 1000 * statistics.median(plain),
    }


def references(files: list[Path]) -> dict[str, dict[str, float | int]]:
    env = OSEnvironment()
    out = {}
    for path in files:
        tasks = env.load(path)
        began = time.perf_counter()
        results = list(env.verify(tasks))
        passed = sum(reward is not None and reward >= 1.0 for _, reward, _ in results)
        out[path.name] = {
            "tasks": len(tasks),
            "passed": passed,
            "unsupported": sum(reward is None for _, reward, _ in results),
            "failed": [task.id for task, reward, _ in results if reward is not None and reward < 1.0],
            "seconds": time.perf_counter() - began,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--tasks", type=Path, nargs="*", default=DEFAULT_TASKS)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    fig = startup(args.starts)
    print(
        f"task system start (median of {args.starts}, after the first): {fig['system_start_ms']:.0f} ms "
        f"(p95 {fig['system_start_p95_ms']:.0f} ms); goal <= 300 ms: {300 / fig['system_start_ms']:.2f}x"
    )
    print(
        f"a command in a running system: {fig['command_in_system_ms']:.1f} ms; plain bash -c: "
        f"{fig['plain_subprocess_ms']:.1f} ms ({fig['command_in_system_ms'] / fig['plain_subprocess_ms']:.2f}x)"
    )
    refs = references(args.tasks)
    total = sum(r["tasks"] for r in refs.values())
    passed = sum(r["passed"] for r in refs.values())
    for name, r in refs.items():
        failed = f"  failed: {', '.join(r['failed'])}" if r["failed"] else ""
        print(f"  {name:24s} {r['passed']:3d}/{r['tasks']:<3d} in {r['seconds']:5.1f} s{failed}")
    print(
        f"references pass: {passed}/{total} = {passed / total:.1%}; goal >= 95 %: {passed / total / 0.95:.2f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps({**fig, "references": refs, "reference_pass_rate": passed / total}, indent=1)
        )


if __name__ == "__main__":
    main()

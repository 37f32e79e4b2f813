"""What the agent runtime costs apart from the model, in one run.

1. Non-model overhead per SQL step: the HR agent runs rounds against a model that answers at once
   (a replay of fixed replies), so everything measured is the runtime's own work: rendering the
   conversation, parsing the reply (with BLEU repair on), running the statement in DuckDB with
   its timeout guard, rendering the rows, recording the step. Goal: at most 20 ms per step.
2. Sandboxed command latency: the same command in the bubblewrap shell session vs. a plain
   `subprocess.run(["bash", "-c", cmd])`. Goal: at most 3x.

    .venv/bin/python benchmarks/agent_steps.py [--steps 200] [--commands 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.loop import Agent, AgentConfig
from agentlm.agent.models import Completion
from agentlm.agent.profiles import load_profile

SQL = (
    "SELECT e.first_name, e.last_name, b.entitled_days - b.used_days FROM leave_balances b "
    "JOIN employees e USING (employee_id) WHERE b.leave_type = 'vacation' AND b.year = 2026 "
    "ORDER BY 3 DESC LIMIT 5;"
)


class Replay:
    """A model that answers instantly: each round a different SQL step (so no repeat stop)."""

    model_id = "replay"

    def __init__(self, steps: int):
        self.n, self.steps = 0, steps

    def complete(self, messages, params, tools=None) -> Completion:
        self.n += 1
        if self.n > self.steps:
            return Completion("Done.\nAction: Answer\nFinal Answer: ok")
        sql = SQL.replace("LIMIT 5", f"LIMIT {self.n % 7 + 1}")
        return Completion(f"Step {self.n}: I look at the balances.\nAction: Operation\n```sql\n{sql}\n```")


def sql_overhead(steps: int) -> tuple[float, float]:
    """(mean ms per step, p95 ms per step) of non-model work."""
    with tempfile.TemporaryDirectory() as tmp:
        profile = load_profile("hr-assistant").with_database(build_hr_database(Path(tmp) / "hr.duckdb"))
        try:
            Agent(Replay(3), profile).run("warm-up")  # the first connection and schema read
            per_step: list[float] = []
            agent = Agent(Replay(steps), profile, AgentConfig(max_rounds=steps + 1))
            stream = agent.stream("How many vacation days do people have left?")
            t = time.perf_counter()
            while True:
                try:
                    next(stream)
                except StopIteration as done:
                    traj = done.value
                    break
                now = time.perf_counter()
                per_step.append((now - t) * 1000)
                t = now
        finally:
            profile.sql_tool.close()
    assert traj.stop_reason == "answer" and len(traj.steps) == steps + 1, traj.stop_reason
    per_step = per_step[:-1]  # the answer step runs no tool
    return statistics.mean(per_step), statistics.quantiles(per_step, n=20)[18]


def shell_ratio(commands: int) -> tuple[float, float, float]:
    """(session ms, fresh-sandbox ms, plain ms): median latency of one short command in each.

    The agent's shell is a persistent session per task (AgentBench's OS task keeps one bash), so a
    command costs a round trip into it; checks run each command in a fresh sandbox.
    """
    from agentlm.agent.tools.sandbox import ShellSession, run_isolated

    cmd = "echo hi; ls /usr/bin | wc -l"
    plain: list[float] = []
    for _ in range(commands):
        t = time.perf_counter()
        subprocess.run(["bash", "-c", cmd], capture_output=True, check=True)
        plain.append((time.perf_counter() - t) * 1000)
    boxed: list[float] = []
    with ShellSession() as session:
        session.run("true")  # the sandbox starts once per task, not per command
        for _ in range(commands):
            t = time.perf_counter()
            session.run(cmd)
            boxed.append((time.perf_counter() - t) * 1000)
    fresh: list[float] = []
    for _ in range(commands):
        t = time.perf_counter()
        run_isolated(cmd)
        fresh.append((time.perf_counter() - t) * 1000)
    return statistics.median(boxed), statistics.median(fresh), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--commands", type=int, default=50)
    args = parser.parse_args()

    mean, p95 = sql_overhead(args.steps)
    print(f"SQL step, non-model overhead: mean {mean:.2f} ms, p95 {p95:.2f} ms over {args.steps} steps")
    print(f"  vs the 20 ms goal: {mean / 20:.3f} of the limit (p95 {p95 / 20:.3f})")
    session, fresh, plain = shell_ratio(args.commands)
    print(f"shell command (median of {args.commands}): plain subprocess {plain:.2f} ms")
    print(
        f"  the agent's persistent sandboxed session: {session:.2f} ms = {session / plain:.2f}x plain (goal <= 3x)"
    )
    print(f"  a fresh sandbox per command:              {fresh:.2f} ms = {fresh / plain:.2f}x plain")


if __name__ == "__main__":
    main()

"""Many users at once on `agentlm serve` for minutes: errors, latency, throughput, and flat memory.

--sessions simulated users (32) talk to the server over real HTTP (httpx, asyncio) for --duration
seconds (300). Each loops until the deadline, one conversation after another, by its number:

  n % 4 == 0  hr-assistant          a two-turn conversation with the agent (model = the profile,
  n % 4 == 2  scheduling-assistant  not streamed): a question about the sample HR or calendar data,
                                    then a follow-up sent with the conversation so far; then thumbs
                                    up or down on the last run (POST /v1/feedback). The agent keeps
                                    its own per-round budget (384 tokens) and temperature 0.
  n % 4 == 1  chat stream           a two-turn conversation with the served base model, stream=true
                                    (also timed to the first token, TTFT), max_tokens 96
  n % 4 == 3  chat                  the same, not streamed

The questions are written here from the sample databases, not taken from benchmarks/heldout/:
against a server you use (--url), the runs and their feedback go into its store, from which
training data is exported. No session starts a turn after the deadline; the turns in flight are
waited for, and a conversation's feedback is sent even then.

An error is any non-2xx status (429 included), a transport error or timeout, an error event in a
stream or a stream cut before [DONE], a reply without what it must carry (an agent reply's
trajectory id), or an agent run that stopped with `stop_reason: error` (a failed model call inside
a run, a full queue included, still answers 200). The goal is none; the exit status is 1 if any.
An agent run that ran out of rounds or of its time budget (120 s) is not an error; the stop
reasons are printed.

Memory: the server process's resident memory (its children included; psutil, else
/proc/PID/status VmRSS) every --sample-every seconds (5). Start is the first sample after
--warmup (60 s, at most half the duration), end the last, taken as the load ends; the slope is a
least-squares line over the samples after the warm-up. Flat memory is the goal: end / start <= 1.05.

Without --url it starts `agentlm serve --model M` on a free port with AGENTLM_HOME in a temporary
directory (fresh sample databases and trajectory store unless --store; the converted model and its
caches linked in) and keeps its log. The client shares the machine with the server: on a small
machine its own CPU time is part of what is measured.

    .venv/bin/python benchmarks/load.py [--sessions 32] [--duration 300] [--model embedded]
        [--store PATH|postgresql://...] [--url http://127.0.0.1:8000 [--pid PID]] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from agentlm.processes import ServerStartError, free_port, start_server, stop

CHAT_MAX_TOKENS = 96  # a short reply: 2 cores decode for 32 users
FLAT_RATIO = 1.05  # end / start RSS after the warm-up that still counts as flat
SHOWN_ERRORS = 5
PROBLEM = re.compile(r'WARNING|ERROR|Traceback|" [45]\d\d ')  # in the server log

# (question, follow-up) about the sample databases (agent/databases/).
CONVERSATIONS = {
    "hr-assistant": [
        ("How many vacation days does Dana Kim have left?", "And who is her manager?"),
        ("Who works in the People department?", "Which of them was hired most recently?"),
        ("What is the policy on sick leave?", "And what does the vacation policy say?"),
        ("What is Ingrid Jensen's job title?", "Which department is she in, and where is it located?"),
        ("How many people work in Marketing?", "Who are they?"),
        ("What is the policy on personal days?", "Do unused personal days carry over?"),
        (
            "Please file a vacation request for Omar Ivanov from 2026-12-21 to 2026-12-22.",
            "How many vacation days will he have left after that?",
        ),
    ],
    "scheduling-assistant": [
        (
            "Which rooms with at least 10 seats are free on 2026-12-02 from 10:00 to 11:00?",
            "Which floor is the biggest of them on?",
        ),
        (
            "Is Dana Kim free on 2026-12-01 between 12:00 and 13:00?",
            "What about on 2026-12-04 at the same time?",
        ),
        ("How many seats does the Granite room have?", "Is it free on 2026-12-04 from 12:30 to 13:30?"),
        ("Which meetings does Chen Meyer organise?", "In which rooms are they?"),
        (
            'Book Fjord for a "Planning" meeting organised by Ben Ortiz on 2026-12-03 from 09:00 to 10:00.',
            "Which team is Ben Ortiz on?",
        ),
    ],
}
CHATS = [
    ("Give me three tips for writing a clear email.", "Now say it in one sentence."),
    ("What is the difference between a list and a tuple in Python?", "Show a short example."),
    ("Suggest a name for a small bakery.", "Give me two more."),
    ("What is a meeting agenda for?", "How long should one be?"),
    ("Write a haiku about autumn.", "Now one about spring."),
    ("What should I pack for a two-day business trip?", "And if it rains?"),
]
SESSION_KINDS = ("hr-assistant", "chat stream", "scheduling-assistant", "chat")  # by session number % 4


@dataclass
class Record:
    """One request: what it was, when it started (seconds from the start), how it went."""

    kind: str  # "hr-assistant", "chat stream follow-up", "feedback", ...
    session: int
    start: float
    seconds: float = 0.0
    ttft: float | None = None  # streams: seconds to the first text
    error: str | None = None
    stop_reason: str | None = None  # agent runs

    @property
    def turn(self) -> bool:  # a chat or agent reply that came back
        return self.kind != "feedback" and self.error is None


class ReplyError(Exception):
    """A 2xx reply that is not what it must be."""


class Load:
    """The clients' shared state: the HTTP client, the clock, and every request's record."""

    def __init__(self, http: httpx.AsyncClient, base_model: str, duration: float):
        self.http = http
        self.base_model = base_model
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + duration
        self.records: list[Record] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def open(self) -> bool:
        return time.perf_counter() < self.deadline

    async def post(self, kind: str, session: int, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST `body` and return the JSON reply, or None on an error (recorded)."""
        record = Record(kind, session, self.now())
        self.records.append(record)
        try:
            reply = await self.http.post(path, json=body)
            if not reply.is_success:
                raise ReplyError(f"HTTP {reply.status_code}: {reply.text[:300]}")
            data = reply.json()
            if kind != "feedback":
                _content(data)
            if kind.startswith(tuple(CONVERSATIONS)):
                run = data.get("agentlm") or {}
                record.stop_reason = run.get("stop_reason")
                if not run.get("trajectory_id"):
                    raise ReplyError(f"an agent reply without agentlm.trajectory_id: {reply.text[:300]}")
                if record.stop_reason == "error":
                    raise ReplyError(f"agent run stopped with an error: {_content(data)[:300]}")
            return data
        except Exception as e:
            record.error = str(e) if isinstance(e, ReplyError) else f"{type(e).__name__}: {e}"
            return None
        finally:
            record.seconds = self.now() - record.start

    async def stream(self, kind: str, session: int, body: dict[str, Any]) -> str | None:
        """POST a streamed chat completion; return its text, or None on an error (recorded)."""
        record = Record(kind, session, self.now())
        self.records.append(record)
        parts: list[str] = []
        try:
            async with self.http.stream("POST", "/chat/completions", json={**body, "stream": True}) as reply:
                if not reply.is_success:
                    await reply.aread()
                    raise ReplyError(f"HTTP {reply.status_code}: {reply.text[:300]}")
                done = False
                async for line in reply.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    chunk = json.loads(line.removeprefix("data: "))
                    if "error" in chunk:
                        raise ReplyError(f"error event in the stream: {json.dumps(chunk['error'])[:300]}")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if record.ttft is None:
                                record.ttft = self.now() - record.start
                            parts.append(text)
                if not done:
                    raise ReplyError("the stream ended before data: [DONE]")
            return "".join(parts)
        except Exception as e:
            record.error = str(e) if isinstance(e, ReplyError) else f"{type(e).__name__}: {e}"
            return None
        finally:
            record.seconds = self.now() - record.start


def _content(data: dict[str, Any]) -> str:
    content = data["choices"][0]["message"].get("content")
    if content is not None and not isinstance(content, str):
        raise ReplyError(f"message content is {type(content).__name__}")
    return content or ""


async def agent_session(load: Load, n: int, profile: str, rng: random.Random) -> None:
    while load.open():
        question, follow_up = rng.choice(CONVERSATIONS[profile])
        messages = [{"role": "user", "content": question}]
        run = await load.post(profile, n, "/chat/completions", {"model": profile, "messages": messages})
        if run is None:
            await asyncio.sleep(1)  # no tight loop of failures
            continue
        if load.open():
            messages += [
                {"role": "assistant", "content": _content(run)},
                {"role": "user", "content": follow_up},
            ]
            body = {"model": profile, "messages": messages}
            run = await load.post(f"{profile} follow-up", n, "/chat/completions", body) or run
        rating = rng.choice([1, -1])
        feedback = {
            "trajectory_id": run["agentlm"]["trajectory_id"],
            "rating": rating,
            "comment": "load test",
        }
        await load.post("feedback", n, "/feedback", feedback)


async def chat_session(load: Load, n: int, streamed: bool, rng: random.Random) -> None:
    kind = "chat stream" if streamed else "chat"
    while load.open():
        messages: list[dict[str, str]] = []
        for turn, text in enumerate(rng.choice(CHATS)):
            if turn and not load.open():
                break
            messages.append({"role": "user", "content": text})
            body = {"model": load.base_model, "messages": messages, "max_tokens": CHAT_MAX_TOKENS}
            name = f"{kind} follow-up" if turn else kind
            if streamed:
                reply = await load.stream(name, n, body)
            else:
                data = await load.post(name, n, "/chat/completions", body)
                reply = None if data is None else _content(data)
            if reply is None:
                await asyncio.sleep(1)
                break
            messages.append({"role": "assistant", "content": reply})


# --- the server's memory -----------------------------------------------------------------------
def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process and its children (psutil), or of the process alone
    (/proc/PID/status VmRSS); None once it is gone."""
    try:
        import psutil
    except ImportError:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        return int(status.split("VmRSS:")[1].split()[0]) * 1024
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child that just exited
                total += child.memory_info().rss
        return total
    except psutil.Error:
        return None


async def sample_memory(load: Load, pid: int, every: float, samples: list[tuple[float, int]]) -> None:
    while True:
        rss = await asyncio.to_thread(rss_bytes, pid)
        if rss is not None:
            samples.append((load.now(), rss))
        await asyncio.sleep(every)


def listening_pid(base_url: str) -> int | None:
    """The local process listening on the URL's port, when psutil can see it."""
    try:
        import psutil
    except ImportError:
        return None
    url = httpx.URL(base_url)
    if url.host not in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}:
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    return None


# --- the run -----------------------------------------------------------------------------------
async def run_load(
    base_url: str, api_key: str, sessions: int, duration: float, timeout: float, pid: int | None,
    sample_every: float, seed: int,
) -> tuple[list[Record], list[tuple[float, int]], float, str]:  # fmt: skip
    """The sessions until the deadline; returns the records, the RSS samples (seconds, bytes),
    the wall seconds from the first request to the last reply, and the base model's id."""
    headers = {"Authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=sessions + 4, max_keepalive_connections=sessions + 4)
    async with httpx.AsyncClient(
        base_url=f"{base_url}/v1", headers=headers, timeout=httpx.Timeout(timeout, connect=30), limits=limits
    ) as http:
        models = (await http.get("/models")).raise_for_status().json()["data"]
        base_model = next(m["id"] for m in models if m.get("owned_by") != "agentlm-agent")
        load = Load(http, base_model, duration)
        samples: list[tuple[float, int]] = []
        sampler = asyncio.create_task(sample_memory(load, pid, sample_every, samples)) if pid else None
        tasks = []
        for n in range(sessions):
            rng = random.Random(seed * 1000 + n)
            kind = SESSION_KINDS[n % len(SESSION_KINDS)]
            if kind.startswith("chat"):
                tasks.append(chat_session(load, n, kind == "chat stream", rng))
            else:
                tasks.append(agent_session(load, n, kind, rng))
        try:
            await asyncio.gather(*tasks)
        finally:
            if sampler:
                sampler.cancel()
        wall = load.now()
        if pid and (rss := rss_bytes(pid)) is not None:
            samples.append((wall, rss))  # the end: as the load ends
        return load.records, samples, wall, base_model


def percentile(values: list[float], q: float) -> float | None:
    """The q-th quantile (0.01 steps), interpolated between the closest ranks (numpy's default)."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def memory_figures(samples: list[tuple[float, int]], warmup: float) -> dict[str, Any]:
    mib = [(t, b / 2**20) for t, b in samples]
    after = [(t, m) for t, m in mib if t >= warmup]
    fig: dict[str, Any] = {"samples": len(mib), "warmup_s": warmup}
    if not mib:
        return fig
    fig["max_mib"] = max(m for _, m in mib)
    fig["first_mib"] = mib[0][1]
    if len(after) < 2:
        return fig
    fig["start_mib"], fig["end_mib"] = after[0][1], after[-1][1]
    fig["growth_ratio"] = fig["end_mib"] / fig["start_mib"]
    minutes = [t / 60 for t, _ in after]
    values = [m for _, m in after]
    mean_t, mean_m = statistics.fmean(minutes), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in minutes)
    fig["slope_mib_per_min"] = (
        sum((t - mean_t) * (m - mean_m) for t, m in zip(minutes, values, strict=True)) / spread
        if spread
        else 0.0
    )
    fig["flat"] = fig["growth_ratio"] <= FLAT_RATIO
    return fig


def figures(records: list[Record], wall: float) -> dict[str, Any]:
    """Per kind and in all: requests, errors, latency percentiles, TTFT, turns a minute."""
    kinds = sorted({r.kind for r in records}, key=_kind_order)
    rows = {}
    for kind in [*kinds, "all"]:
        rs = [r for r in records if kind in ("all", r.kind)]
        ok = [r.seconds for r in rs if r.error is None]
        ttfts = [r.ttft for r in rs if r.error is None and r.ttft is not None]
        turns = sum(r.turn for r in rs)
        rows[kind] = {
            "requests": len(rs),
            "errors": sum(r.error is not None for r in rs),
            "p50_s": percentile(ok, 0.5),
            "p95_s": percentile(ok, 0.95),
            "max_s": max(ok, default=None),
            "ttft_p50_s": percentile(ttfts, 0.5),
            "ttft_p95_s": percentile(ttfts, 0.95),
            "turns_per_min": turns / (wall / 60) if kind != "feedback" and wall else None,
            "stop_reasons": dict(Counter(r.stop_reason for r in rs if r.stop_reason)),
        }
    return rows


def _kind_order(kind: str) -> tuple[int, str]:
    base = kind.removesuffix(" follow-up")
    order = ["hr-assistant", "scheduling-assistant", "feedback", "chat", "chat stream"]
    return (order.index(base) if base in order else len(order), kind)


def _s(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def report(fig: dict[str, Any]) -> None:
    rows = fig["kinds"]
    print()
    print(
        f"{fig['sessions']} sessions for {fig['duration_s']:.0f} s (the last reply at {fig['wall_s']:.0f} s) "
        f"on {fig['server']}, model {fig['base_model']}"
    )
    header = f"{'kind':32s} {'requests':>8s} {'errors':>6s} {'p50 s':>7s} {'p95 s':>7s} {'max s':>7s} "
    header += f"{'TTFT p50':>8s} {'TTFT p95':>8s} {'turns/min':>9s}"
    print(header)
    print("-" * len(header))
    for kind, row in rows.items():
        if kind == "all":
            print("-" * len(header))
        print(
            f"{kind:32s} {row['requests']:8d} {row['errors']:6d} {_s(row['p50_s']):>7s} "
            f"{_s(row['p95_s']):>7s} {_s(row['max_s']):>7s} {_s(row['ttft_p50_s']):>8s} "
            f"{_s(row['ttft_p95_s']):>8s} {_s(row['turns_per_min']):>9s}"
        )
    reasons = Counter()
    for kind, row in rows.items():
        if kind != "all":
            reasons.update(row["stop_reasons"])
    if reasons:
        print("agent runs' stop reasons: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    by_deadline = fig["turns_by_deadline"]
    print(
        f"turns done by the deadline: {by_deadline} ({by_deadline / (fig['duration_s'] / 60):.2f}/min; "
        f"the table's rates are over all {fig['wall_s']:.0f} s)"
    )
    errors = fig["errors"]
    print(f"errors: {len(errors)}" + (" (goal 0)" if errors else ""))
    for kind, text in errors[:SHOWN_ERRORS]:
        print(f"  {kind}: {text}")
    if len(errors) > SHOWN_ERRORS:
        print(f"  ... and {len(errors) - SHOWN_ERRORS} more")
    mem = fig["memory"]
    if not mem.get("samples"):
        print("server RSS: not sampled (no local server process; give --pid)")
        return
    print(
        f"server RSS ({mem['samples']} samples, every {fig['sample_every_s']:g} s): first {mem['first_mib']:.0f} MiB, "
        f"max {mem['max_mib']:.0f} MiB"
    )
    if "growth_ratio" not in mem:
        print(f"memory verdict: too few samples after the {mem['warmup_s']:.0f} s warm-up for one")
        return
    print(
        f"  after the {mem['warmup_s']:.0f} s warm-up: start {mem['start_mib']:.0f} MiB, end {mem['end_mib']:.0f} MiB, "
        f"slope {mem['slope_mib_per_min']:+.1f} MiB/min (least squares)"
    )
    verdict = "flat" if mem["flat"] else "GROWING"
    print(f"memory verdict: {verdict}: end / start = {mem['growth_ratio']:.3f} (goal <= {FLAT_RATIO})")


# --- the server, when this starts one ----------------------------------------------------------
@contextlib.contextmanager
def served(model: str, store: str | None) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`agentlm serve` on a free port with a temporary AGENTLM_HOME that shares the model and its
    caches; yields its URL, its process and its log (kept after the run)."""
    from agentlm.paths import home

    tmp = Path(tempfile.mkdtemp(prefix="agentlm-load-"))
    for shared in ("models", "cache"):  # a returning user's start: nothing converted again
        (home() / shared).mkdir(parents=True, exist_ok=True)
        (tmp / shared).symlink_to(home() / shared, target_is_directory=True)
    fd, log_name = tempfile.mkstemp(prefix="agentlm-load-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    args = ["--model", model, *(["--store", store] if store else [])]
    port = free_port()
    try:
        with log_path.open("w") as log:
            try:
                proc, seconds = start_server(
                    args, port, env={**os.environ, "AGENTLM_HOME": str(tmp)}, stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            except ServerStartError:
                print(log_path.read_text()[-4000:], file=sys.stderr)
                raise
            print(f"server: agentlm serve {' '.join(args)} healthy in {seconds:.1f} s (log {log_path})")
            try:
                yield f"http://127.0.0.1:{port}", proc, log_path
            finally:
                stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def log_problems(log_path: Path) -> list[str]:
    """The server log's WARNING and ERROR lines (the access log's 4xx and 5xx included)."""
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if PROBLEM.search(line)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=32, help="simulated users at once")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--model", default="embedded", help="what `agentlm serve --model` serves")
    parser.add_argument(
        "--store", help="the started server's trajectory store: a SQLite path or a postgresql:// URL"
    )
    parser.add_argument("--url", help="a running server (e.g. http://127.0.0.1:8000) instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process, for its memory")
    parser.add_argument("--api-key", default=os.environ.get("AGENTLM_API_KEY", "EMPTY"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before memory's start sample")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=0, help="the sessions' choices of conversation")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.duration <= 0:
        parser.error("--sessions and --duration must be positive")
    if args.url and args.store:
        parser.error("--store is for the server this starts; a running server (--url) has its own")
    if args.pid and not args.url:
        parser.error("--pid goes with --url; the server this starts is sampled anyway")
    warmup = min(args.warmup, args.duration / 2)

    def measure(base_url: str, pid: int | None) -> dict[str, Any]:
        print(
            f"load: {args.sessions} sessions for {args.duration:g} s on {base_url} (server pid {pid or '?'})"
        )
        records, samples, wall, base_model = asyncio.run(
            run_load(base_url, args.api_key, args.sessions, args.duration, args.timeout, pid,
                     args.sample_every, args.seed)
        )  # fmt: skip
        return {
            "sessions": args.sessions,
            "duration_s": args.duration,
            "wall_s": wall,
            # The turns in flight at the deadline finish after it, fewer at a time: the rate
            # over the deadline alone, apart from that tail.
            "turns_by_deadline": sum(r.turn and r.start + r.seconds <= args.duration for r in records),
            "server": base_url,
            "base_model": base_model,
            "chat_max_tokens": CHAT_MAX_TOKENS,
            "sample_every_s": args.sample_every,
            "kinds": figures(records, wall),
            "errors": [(r.kind, r.error) for r in records if r.error is not None],
            "memory": memory_figures(samples, warmup),
            "rss_samples": [(round(t, 2), b) for t, b in samples],
            "records": [asdict(r) for r in records],
        }

    if args.url:
        base_url = args.url.rstrip("/").removesuffix("/v1")
        fig = measure(base_url, args.pid or listening_pid(base_url))
    else:
        with served(args.model, args.store) as (base_url, proc, log_path):
            fig = measure(base_url, proc.pid)
        problems = log_problems(log_path)
        fig["server_log"] = str(log_path)
        fig["server_log_problems"] = len(problems)
    report(fig)
    if "server_log" in fig:
        print(f"server log: {fig['server_log_problems']} warning/error lines ({fig['server_log']})")
        for line in log_problems(Path(fig["server_log"]))[:SHOWN_ERRORS]:
            print(f"  {line[:300]}")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    return 1 if fig["errors"] else 0


if __name__ == "__main__":
    # Stopped by a signal (a CI timeout, `kill`): unwind, so the server started here is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())

"""The assistants on held-out questions: accuracy, latency, memory, and tool calling, against goals.

Asks every question in ``benchmarks/heldout/assistant_questions.jsonl`` (written, with answers
computed from the sample databases, by ``benchmarks/heldout/make_assistant_questions.py``) through
the real ``openai`` client, ``model=<agent profile>``, temperature 0, one question at a time by
default (a person asks one at a time; the latency goals are per question on an idle server). A
follow-up is sent with the conversation so far: the earlier questions, and the agent's own earlier
answers as assistant messages. Each turn is graded on its ``expect`` spec (``grade`` below); a
booking or a filed leave request is graded on the writes the run holds for approval (the
trajectory's ``pending_writes``).

Then sends every request in ``benchmarks/heldout/tool_calls.jsonl`` to the served base model with
``tools=`` and grades the calls it makes: the calls must equal the expected ones as a multiset
(name and arguments: string values compared case-insensitively, optional arguments filled with the
schema's defaults), and every call's arguments must parse as a JSON object (the parse rate). A
request the server refuses (400: an engine without tool support) counts as wrong, with its error.

Without ``--base-url`` it starts ``agentlm serve --model M`` on a free port, with AGENTLM_HOME in a
temporary directory (fresh sample databases and trajectory store; the converted model and its
caches are linked in, so nothing is converted or measured again), and samples that server's resident memory (its
children included) every 0.2 s for the whole run. Prints accuracy overall and by kind (HR,
scheduling, follow-ups, unanswerable, bookings, leave filings; and by category), p50/p95 latency,
peak RSS, tool-call accuracy and parse rate, each as a ratio against its goal (>= 1 meets it), and
every failed turn.

    .venv/bin/python benchmarks/assistant.py [--model embedded] [--base-url URL] [--questions F]
        [--tool-calls F] [--limit N] [--parallel 1] [--tool-model ID] [--json OUT]
        [--serve-arg=--dtype --serve-arg=bfloat16 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from openai import APIError, APIStatusError, OpenAI

from agentlm.processes import ServerStartError, free_port, start_server, stop

HELDOUT = Path(__file__).resolve().parent / "heldout"
PROFILES = ("hr-assistant", "scheduling-assistant")
GOALS = {  # figure -> (goal, higher is better)
    "accuracy": (0.85, True),
    "p50_s": (15.0, False),
    "p95_s": (45.0, False),
    "tool_call_accuracy": (0.80, True),
    "tool_call_parse_rate": (1.0, True),
    "peak_rss_mb": (2500.0, False),
}

# --- grading -----------------------------------------------------------------------------------
REFUSALS = (
    "don't have", "do not have", "not available", "no information", "cannot", "can't", "isn't in",
    "is not in", "no record", "not found", "no such", "unable", "doesn't", "does not", "there is no",
    "there's no", "not exist", "don't know", "do not know", "no data", "not recorded", "not stored",
    "not tracked", "not in the",
)  # fmt: skip
NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
]  # fmt: skip
IS_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# A number standing alone: not part of a word, a date (2026-12-09), a time (15:00) or a path.
NUMBER_TOKEN = re.compile(r"(?<![\w.:/-])(\d+(?:\.\d+)?)(?![\w:/]|[.-]\d)")


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("’", "'")).strip()


def _has_number(answer: str, expected: str) -> bool:
    """`expected` (digits) appears as a whole number: 12 matches "12" and "12.0", not "120" or
    "2026-12-09"; a decimal matches an answer rounded to as many places or more precise (3.6 matches
    3.58); 0-20 also match their English words."""
    want = float(expected)
    places = len(expected.partition(".")[2])
    for token in NUMBER_TOKEN.findall(answer):
        got = float(token)
        if got == want or (places and len(token.partition(".")[2]) >= places and round(got, places) == want):
            return True
    if want == int(want) and 0 <= want < len(NUMBER_WORDS):
        return re.search(rf"\b{NUMBER_WORDS[int(want)]}\b", answer, re.IGNORECASE) is not None
    return False


def contains(answer: str, expected: str) -> bool:
    """Case-insensitive, whitespace-insensitive; numbers as whole numbers, words as whole words
    ("Mia" does not match "Miami")."""
    expected = _squash(expected)
    if IS_NUMBER.fullmatch(expected):
        return _has_number(answer, expected)
    left = r"(?<!\w)" if expected[:1].isalnum() else ""
    right = r"(?!\w)" if expected[-1:].isalnum() else ""
    return re.search(left + re.escape(expected) + right, _squash(answer), re.IGNORECASE) is not None


def _matches(text: str, spec: dict[str, Any]) -> bool:
    """`all`: each entry (a string, or a list of alternatives) appears; `any`: one of them does;
    `none`: none does."""

    def found(entry: str | list[str]) -> bool:
        return any(contains(text, e) for e in ([entry] if isinstance(entry, str) else entry))

    return (
        all(found(e) for e in spec.get("all", []))
        and ("any" not in spec or any(found(e) for e in spec["any"]))
        and not any(found(e) for e in spec.get("none", []))
    )


def refuses(answer: str, question: str = "") -> bool:
    """Says it cannot answer, and states no number that the question did not contain."""
    lowered = answer.lower().replace("’", "'")
    invented = set(re.findall(r"\d+", answer)) - set(re.findall(r"\d+", question))
    return any(phrase in lowered for phrase in REFUSALS) and not invented


def grade(
    answer: str, expect: dict[str, Any], pending_writes: Sequence[str] = (), question: str = ""
) -> bool:
    """Whether an answer (and the writes its run holds for approval) meets a turn's expect spec:
    `all`/`any`/`none` on the answer, `refusal`, and `pending_write` (`all`/`any`/`none` on the
    pending statements joined)."""
    if expect.get("refusal") and not refuses(answer, question):
        return False
    if "pending_write" in expect and not _matches("\n".join(pending_writes), expect["pending_write"]):
        return False
    return _matches(answer, expect)


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _canonical(name: str, arguments: dict[str, Any], tools: Sequence[dict[str, Any]]) -> str:
    """One call as comparable text: declared defaults filled in, strings case-folded, numbers as floats."""
    properties = next(
        (t["function"]["parameters"].get("properties", {}) for t in tools if t["function"]["name"] == name),
        {},
    )
    filled = {k: p["default"] for k, p in properties.items() if "default" in p} | arguments
    return json.dumps([name, _normal(filled)], sort_keys=True)


def calls_match(
    emitted: Sequence[dict[str, Any]], expected: Sequence[dict[str, Any]], tools: Sequence[dict]
) -> bool:
    """The emitted calls ({"name", "arguments": dict, or None if unparsable}) equal the expected ones
    as a multiset."""
    if any(not isinstance(c["arguments"], dict) for c in emitted):
        return False
    got = Counter(_canonical(c["name"], c["arguments"], tools) for c in emitted)
    return got == Counter(_canonical(c["name"], c["arguments"], tools) for c in expected)


# --- the server and its memory -----------------------------------------------------------------
class PeakRSS:
    """Samples a process tree's resident memory every `interval` seconds in a thread; `peak_mb`."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child that just exited
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_bytes = max(self.peak_bytes, self._sample())
            except psutil.Error:  # the server itself is gone
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def _listening_pid(base_url: str) -> int | None:
    """The local process listening on the URL's port, if there is one we may see."""
    parts = urlsplit(base_url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except psutil.Error:
        return None
    return None


@contextlib.contextmanager
def served(model: str, serve_args: Sequence[str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """`agentlm serve` on a free port with a temporary AGENTLM_HOME that shares the model and its caches."""
    from agentlm.paths import home

    tmp = Path(tempfile.mkdtemp(prefix="agentlm-assistant-bench-"))
    # The converted model and what was measured or compiled for it (step costs, grammars): a
    # returning user's start, not a first one.
    for shared in ("models", "cache"):
        (home() / shared).mkdir(parents=True, exist_ok=True)
        (tmp / shared).symlink_to(home() / shared, target_is_directory=True)
    # The server's log is kept after the run (the temporary home is not).
    fd, log_name = tempfile.mkstemp(prefix="agentlm-assistant-bench-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    env = {**os.environ, "AGENTLM_HOME": str(tmp)}
    port = free_port()
    try:
        with log_path.open("w") as log:
            try:
                proc, seconds = start_server(
                    ["--model", model, *serve_args], port, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            except ServerStartError:
                print(log_path.read_text()[-4000:], file=sys.stderr)
                raise
            print(f"server: agentlm serve --model {model} healthy in {seconds:.1f} s (log {log_path})")
            try:
                yield f"http://127.0.0.1:{port}", proc
            finally:
                stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- asking the questions ----------------------------------------------------------------------
@dataclass
class TurnResult:
    item_id: str
    profile: str
    category: str
    turn: int
    turns: int  # of the item
    question: str
    expect: dict[str, Any]
    answer: str = ""
    stop_reason: str | None = None
    trajectory_id: str | None = None
    pending_writes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    correct: bool = False

    @property
    def kinds(self) -> list[str]:
        kinds = ["hr" if self.profile == "hr-assistant" else "scheduling"]
        if self.turns > 1:
            kinds.append("follow_up")
        if self.expect.get("refusal"):
            kinds.append("unanswerable")
        if "pending_write" in self.expect:
            kinds.append("booking" if self.profile == "scheduling-assistant" else "leave_filing")
        return kinds


def _pending_writes(base_url: str, api_key: str, ext: dict[str, Any]) -> list[str]:
    """The run's writes held for approval: in the reply's extension (streamed replies carry them),
    else in the stored trajectory."""
    if "pending_writes" in ext:
        return list(ext["pending_writes"])
    if not ext.get("trajectory_id"):
        return []
    reply = httpx.get(
        f"{base_url}/v1/trajectories/{ext['trajectory_id']}",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    reply.raise_for_status()
    return list(reply.json().get("pending_writes") or [])


def ask_item(client: OpenAI, base_url: str, api_key: str, item: dict[str, Any]) -> list[TurnResult]:
    """One item's turns in order, each sent with the conversation so far."""
    messages: list[dict[str, str]] = []
    results = []
    for n, turn in enumerate(item["turns"]):
        result = TurnResult(
            item["id"], item["profile"], item.get("category", ""), n, len(item["turns"]),
            turn["question"], turn["expect"],
        )  # fmt: skip
        messages.append({"role": "user", "content": turn["question"]})
        started = time.perf_counter()
        try:
            reply = client.chat.completions.create(model=item["profile"], messages=messages, temperature=0)
        except APIError as e:
            result.error = f"{type(e).__name__}: {e}"
        result.seconds = time.perf_counter() - started
        if result.error is None:
            result.answer = reply.choices[0].message.content or ""
            ext = (reply.model_extra or {}).get("agentlm") or {}
            result.stop_reason, result.trajectory_id = ext.get("stop_reason"), ext.get("trajectory_id")
            if "pending_write" in turn["expect"]:
                try:
                    result.pending_writes = _pending_writes(base_url, api_key, ext)
                except httpx.HTTPError as e:
                    result.error = f"fetching the trajectory: {e}"
        result.correct = result.error is None and grade(
            result.answer, turn["expect"], result.pending_writes, turn["question"]
        )
        results.append(result)
        messages.append({"role": "assistant", "content": result.answer})
    return results


def ask_all(
    client: OpenAI, base_url: str, api_key: str, items: list[dict[str, Any]], parallel: int
) -> list[TurnResult]:
    def one(item: dict[str, Any]) -> list[TurnResult]:
        results = ask_item(client, base_url, api_key, item)
        for r in results:
            mark = "ok " if r.correct else "BAD"
            print(
                f"  {mark} {r.seconds:6.1f} s  {r.item_id}[{r.turn}]  {r.stop_reason or r.error}", flush=True
            )
        return results

    pool = ThreadPoolExecutor(max(parallel, 1))
    try:
        return [r for results in pool.map(one, items) for r in results]
    finally:  # interrupted: do not wait here for requests in flight (stopping the server ends them)
        pool.shutdown(wait=False, cancel_futures=True)


# --- tool calling ------------------------------------------------------------------------------
@dataclass
class ToolResult:
    item_id: str
    expected: list[dict[str, Any]]
    emitted: list[dict[str, Any]] = field(default_factory=list)  # arguments: a dict, or the raw text
    parsed: int = 0  # emitted calls whose arguments are a JSON object
    content: str = ""
    error: str | None = None
    correct: bool = False


def _parse_arguments(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def call_tools(client: OpenAI, model: str, item: dict[str, Any], max_tokens: int) -> ToolResult:
    result = ToolResult(item["id"], item["expect"])
    try:
        reply = client.chat.completions.create(
            model=model, messages=item["messages"], tools=item["tools"], temperature=0, max_tokens=max_tokens
        )
    except APIStatusError as e:
        result.error = f"{e.status_code}: {e.message}"
        return result
    except APIError as e:
        result.error = f"{type(e).__name__}: {e}"
        return result
    message = reply.choices[0].message
    result.content = message.content or ""
    calls = []
    for tool_call in message.tool_calls or []:
        arguments = _parse_arguments(tool_call.function.arguments)
        result.parsed += arguments is not None
        calls.append({"name": tool_call.function.name, "arguments": arguments})
        result.emitted.append(
            {
                "name": tool_call.function.name,
                "arguments": arguments if arguments is not None else tool_call.function.arguments,
            }
        )
    result.correct = calls_match(calls, item["expect"], item["tools"])
    return result


def base_model_id(client: OpenAI) -> str:
    """The served model that is not an agent profile."""
    models = client.models.list().data
    return next(m.id for m in models if m.owned_by != "agentlm-agent" and m.id not in PROFILES)


# --- figures -----------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (as numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _rate(flags: Iterable[bool]) -> float | None:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


def figures(
    turns: list[TurnResult], tools: list[ToolResult], model: str, peak_mb: float | None
) -> dict[str, Any]:
    kinds = ["hr", "scheduling", "follow_up", "unanswerable", "booking", "leave_filing"]
    categories = sorted({t.category for t in turns if t.category})
    emitted = sum(len(t.emitted) for t in tools)
    seconds = [t.seconds for t in turns if t.error is None]
    items: dict[str, bool] = {}
    for t in turns:
        items[t.item_id] = items.get(t.item_id, True) and t.correct
    return {
        "model": model,
        "n_questions": len(turns),
        "n_items": len(items),
        "accuracy": _rate(t.correct for t in turns),
        "item_accuracy": _rate(items.values()),
        "by_kind": {k: _rate(t.correct for t in turns if k in t.kinds) for k in kinds},
        "by_category": {c: _rate(t.correct for t in turns if t.category == c) for c in categories},
        "p50_s": percentile(seconds, 0.5),
        "p95_s": percentile(seconds, 0.95),
        "peak_rss_mb": peak_mb,
        "n_tool_calls": len(tools),
        "tool_call_accuracy": _rate(t.correct for t in tools),
        "tool_call_parse_rate": sum(t.parsed for t in tools) / emitted if emitted else None,
        "tool_call_errors": sum(t.error is not None for t in tools),
        "failures": [
            {
                "id": t.item_id, "turn": t.turn, "question": t.question, "answer": t.answer,
                "stop_reason": t.stop_reason, "error": t.error, "expect": t.expect,
                "pending_writes": t.pending_writes, "trajectory_id": t.trajectory_id,
                "seconds": round(t.seconds, 2),
            }
            for t in turns if not t.correct
        ],
        "tool_call_failures": [asdict(t) for t in tools if not t.correct],
    }  # fmt: skip


def ratios(fig: dict[str, Any]) -> dict[str, float | None]:
    """Each figure against its goal, oriented so that >= 1 meets it."""
    out: dict[str, float | None] = {}
    for name, (goal, higher) in GOALS.items():
        value = fig.get(name)
        if value is None:
            out[name] = None
        elif higher:
            out[name] = value / goal
        else:
            out[name] = goal / value if value else float("inf")
    return out


def _show(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if not unit else f"{value:.1f}{unit}"


def report(fig: dict[str, Any]) -> None:
    width = 112
    for f in fig["failures"]:
        print("-" * width)
        print(f"FAILED {f['id']}[{f['turn']}] ({f['stop_reason'] or f['error']}, {f['seconds']} s)")
        print(f"  question: {f['question']}")
        print(f"  answer:   {_squash(f['answer'])[:400]!r}")
        print(f"  expect:   {json.dumps(f['expect'])[:400]}")
        if f["pending_writes"] or "pending_write" in f["expect"]:
            print(f"  pending:  {f['pending_writes']}")
    for t in fig["tool_call_failures"]:
        print("-" * width)
        print(f"FAILED tool call {t['item_id']}: expected {json.dumps(t['expected'])}")
        print(f"  emitted: {json.dumps(t['emitted'])[:400]}  content: {_squash(t['content'])[:200]!r}")
        if t["error"]:
            print(f"  error:   {t['error'][:300]}")
    print("=" * width)
    print(
        f"model {fig['model']}: {fig['n_questions']} questions in {fig['n_items']} items, {fig['n_tool_calls']} tool-calling requests"
    )
    print(
        f"{'accuracy (turns)':28s}: {_show(fig['accuracy'])}   items with every turn right: {_show(fig['item_accuracy'])}"
    )
    for kind, value in fig["by_kind"].items():
        print(f"{'  ' + kind:28s}: {_show(value)}")
    for category, value in fig["by_category"].items():
        print(f"{'  category ' + category:28s}: {_show(value)}")
    print(f"{'latency p50 / p95':28s}: {_show(fig['p50_s'], ' s')} / {_show(fig['p95_s'], ' s')}")
    print(f"{'peak server RSS':28s}: {_show(fig['peak_rss_mb'], ' MB')}")
    print(
        f"{'tool-call accuracy':28s}: {_show(fig['tool_call_accuracy'])} ({fig['tool_call_errors']} requests refused)"
    )
    print(f"{'tool-call parse rate':28s}: {_show(fig['tool_call_parse_rate'])}")
    print("ratios against the goals (>= 1.00 meets the goal):")
    for name, ratio in fig["ratios"].items():
        goal, higher = GOALS[name]
        shown = "n/a" if ratio is None else f"{ratio:.2f}x"
        print(f"  {name:26s}: {shown:>8s}  (goal {'>=' if higher else '<='} {goal:g})")  # fmt: skip


def load_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines[:limit] if limit is not None else lines


def run(args: argparse.Namespace, base_url: str, rss: PeakRSS | None) -> dict[str, Any]:
    api_key = args.api_key
    client = OpenAI(base_url=f"{base_url}/v1", api_key=api_key, timeout=args.timeout, max_retries=0)
    questions = load_jsonl(args.questions, args.limit)
    tool_items = load_jsonl(args.tool_calls, args.limit)
    model = args.tool_model or base_model_id(client)
    print(f"asking {len(questions)} question items ({args.parallel} at a time) ...")
    turns = ask_all(client, base_url, api_key, questions, args.parallel)
    print(f"sending {len(tool_items)} tool-calling requests to {model} ...")
    tools = []
    for item in tool_items:
        tools.append(result := call_tools(client, model, item, args.tool_max_tokens))
        mark = "ok " if result.correct else "BAD"
        print(f"  {mark} {result.item_id}  {len(result.emitted)} calls  {result.error or ''}", flush=True)
    fig = figures(turns, tools, model, rss.peak_mb if rss else None)
    fig["model_spec"] = args.model if not args.base_url else None
    fig["base_url"] = args.base_url
    fig["ratios"] = ratios(fig)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded", help="what `agentlm serve --model` serves")
    parser.add_argument(
        "--base-url", help="a running server (e.g. http://127.0.0.1:8000) instead of starting one"
    )
    parser.add_argument("--api-key", default=os.environ.get("AGENTLM_API_KEY", "EMPTY"))
    parser.add_argument("--questions", type=Path, default=HELDOUT / "assistant_questions.jsonl")
    parser.add_argument("--tool-calls", type=Path, default=HELDOUT / "tool_calls.jsonl")
    parser.add_argument(
        "--limit", type=int, help="only the first N question items and N tool-calling requests"
    )
    parser.add_argument("--parallel", type=int, default=1, help="question items asked at once")
    parser.add_argument(
        "--tool-model", help="model id for the tool-calling requests (default: the base model)"
    )
    parser.add_argument(
        "--tool-max-tokens", type=int, default=256, help="completion budget of a tool-calling request"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    parser.add_argument("--json", type=Path, help="write every figure and failure here")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="passed to `agentlm serve`; repeat, e.g. --serve-arg=--dtype",
    )
    args = parser.parse_args(argv)
    # Stopped by a signal (a CI timeout, `kill`): unwind, so the server started here is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.base_url:
        base_url = args.base_url.rstrip("/").removesuffix("/v1")
        pid = _listening_pid(base_url)
        if pid is None:
            print("server: not a local process this can see; no peak RSS")
            fig = run(args, base_url, None)
        else:
            with PeakRSS(pid) as rss:
                fig = run(args, base_url, rss)
    else:
        with served(args.model, args.serve_arg) as (base_url, proc), PeakRSS(proc.pid) as rss:
            fig = run(args, base_url, rss)
    report(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

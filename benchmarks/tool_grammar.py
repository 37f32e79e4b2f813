"""What constrained tool calling costs the embedded engine: the grammar's mask, per token.

Runs the engine on a model (the embedded Gemma 3 270M by default) with two tools and
tool_choice "required", so every token of the reply is masked by its grammar, and times the
engine's mask (``ToolGrammars.mask``: filling the rows' token bitmasks and applying them to the
float32 logits) at each step, for one request alone and for `--rows` at once. Alternates with the
same requests without tools and prints the decode time per token of each. Also prints the one-off
cost of compiling a new tool set (the vocabulary's TokenizerInfo is read when the engine loads).

    .venv/bin/python benchmarks/tool_grammar.py [--model embedded] [--rows 8] [--tokens 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from agentlm.serve.engines import GenerationRequest
from agentlm.serve.engines.embedded import EmbeddedEngine

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city", "unit"],
        },
    },
}
BOOK = {
    "type": "function",
    "function": {
        "name": "book_room",
        "description": "Book a meeting room",
        "parameters": {
            "type": "object",
            "properties": {
                "room": {"type": "string"},
                "start": {"type": "string"},
                "minutes": {"type": "integer"},
            },
            "required": ["room", "start"],
        },
    },
}
ASK = [{"role": "user", "content": "What will the weather be in Oslo for the next three days?"}]


async def decode_ms(engine: EmbeddedEngine, rows: int, tokens: int, tools: bool) -> float:
    """Milliseconds per generated token (first chunk to last) of `rows` requests run together."""

    async def one(i: int) -> tuple[float, int]:
        kw = {"tools": [WEATHER, BOOK], "tool_choice": "required"} if tools else {}
        # Distinct seeds, so the rows sample different replies; none stops before `tokens`
        # without tools only if the model says nothing more, which the count below accounts for.
        request = GenerationRequest(ASK, max_tokens=tokens, temperature=1.0, seed=i, **kw)
        first = last = None
        count = 0
        async for chunk in engine.generate(request):
            now = time.perf_counter()
            first = first or now
            last, count = now, chunk.completion_tokens
        return (last - first) * 1000, count  # type: ignore[operator]

    results = await asyncio.gather(*(one(i) for i in range(rows)))
    return statistics.median(ms / max(n - 1, 1) for ms, n in results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    engine = EmbeddedEngine(args.model, max_batch_size=max(args.rows, 1))
    grammars = engine._tool_grammars
    masked: list[tuple[int, float]] = []  # (rows masked, seconds) per decode step
    mask = grammars.mask

    def timed(logits, rows):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        mask(logits, rows)
        masked.append((len(rows), time.perf_counter() - start))

    grammars.mask = timed  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        grammars.compile([WEATHER], "required", True)
        first = time.perf_counter() - start
        start = time.perf_counter()
        grammars.compile([WEATHER, BOOK], "required", True)
        print(f"first tool set: {first * 1000:.0f} ms (reading the vocabulary: at load, or on the first request with tools for a model llama.cpp tokenizes); a second: "
              f"{(time.perf_counter() - start) * 1000:.0f} ms; vocabulary {grammars._vocab_size}")  # fmt: skip
        for rows in (1, args.rows):
            free, constrained = [], []
            masked.clear()
            for _ in range(args.rounds):
                free.append(asyncio.run(decode_ms(engine, rows, args.tokens, tools=False)))
                constrained.append(asyncio.run(decode_ms(engine, rows, args.tokens, tools=True)))
            full = [s * 1000 for n, s in masked if n == rows]
            f, c = statistics.median(free), statistics.median(constrained)
            print(
                f"{rows} row(s): mask {statistics.median(full):.2f} ms a step (p90 "
                f"{statistics.quantiles(full, n=10)[-1]:.2f}, {len(full)} steps), "
                f"{statistics.median(full) / rows:.2f} ms a token; decode {f:.1f} ms a token without "
                f"tools, {c:.1f} with ({c / f:.3f}x)"
            )
    finally:
        engine.close()


if __name__ == "__main__":
    main()

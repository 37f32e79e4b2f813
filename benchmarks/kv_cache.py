"""The embedded engine's KV cache: appending in place vs. transformers' concatenating layers.

A decode step of N rows with long contexts, through the engine's PaddedBatch, once with the
in-place cache layers it uses (batching.new_cache) and once with a plain DynamicCache, which
copies every layer's whole cache at each step. Rows have different lengths (left padding), as
in serving. Alternates the two a few times and prints the median step time of each and the ratio.

    .venv/bin/python benchmarks/kv_cache.py [--model embedded] [--rows 8] [--context 1400] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from agentlm.serve.engines import batching
from agentlm.serve.engines.embedded import resolve_checkpoint
from agentlm.serve.engines.kernels import pack_linears


def step_ms(model, make_cache, rows: int, context: int, steps: int) -> float:
    """Median milliseconds of a decode step over `steps` steps."""
    batching.new_cache = make_cache
    with torch.inference_mode():
        batch = batching.PaddedBatch(model)
        for i in range(rows):
            length = context + 20 * i
            batch.join(batch.prefill([[(1000 + t) % model.config.vocab_size for t in range(length)]]))
        tokens = [5] * rows
        times = []
        for _ in range(steps + 2):
            start = time.perf_counter()
            tokens = batch.step(tokens).argmax(-1).tolist()
            times.append(time.perf_counter() - start)
        return statistics.median(times[2:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--context", type=int, default=1400, help="the shortest row's prompt tokens")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(args.model), dtype=torch.float32).eval()
    pack_linears(model)
    in_place = batching.new_cache
    kinds = {"in place": in_place, "concatenating": lambda config: DynamicCache(config=config)}
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for name, make in kinds.items():
            results[name].append(step_ms(model, make, args.rows, args.context, args.steps))
    batching.new_cache = in_place
    lengths = f"{args.context}-{args.context + 20 * (args.rows - 1)} tokens"
    for name, ms in results.items():
        print(f"{name:14s}: {min(ms):6.1f} ms a step ({args.rows} rows, {lengths})")
    ratio = min(results["concatenating"]) / min(results["in place"])
    print(f"{'speed-up':14s}: {ratio:.2f}x (concatenating / in place, best of {args.rounds})")


if __name__ == "__main__":
    main()

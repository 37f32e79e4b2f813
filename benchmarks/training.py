"""Training-side throughput, in one run.

1. Tokenize-and-mask: conversations rendered with the chat template and labelled (loss on the
   assistant turns only), per second, with the embedded Gemma tokenizer. Goal: 60k conversations
   in <= 60 s on 2 cores.
2. Packed vs padded: forward + backward real tokens/s of a small Llama over the same conversations
   with ShareGPT-like lengths (log-normal, median ~250 tokens, capped at the sequence length):
   padded micro batches of 8 conversations vs packed micro batches of rows of 2048 tokens filled
   from the stream, as the SFT recipe does. Goal: packed >= 2x padded, padding <= 3 %.

    .venv/bin/python benchmarks/training.py [--conversations 60000] [--steps 12]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from agentlm.data.formats import Conversation, Turn
from agentlm.data.masks import TokenizedExample, tokenize_conversation
from agentlm.data.templates import get_template
from agentlm.train.packing import packed_batch, packed_rows_stream, padded_batch

WORDS = [
    "the",
    "agent",
    "runs",
    "a",
    "query",
    "on",
    "table",
    "and",
    "reads",
    "rows",
    "before",
    "it",
    "answers",
]


def sharegpt_like(n: int, seed: int = 0) -> list[Conversation]:
    """Conversations of 1-4 exchanges whose lengths follow a log-normal like ShareGPT's."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        turns = []
        for _ in range(rng.choice([1, 1, 2, 3, 4])):
            turns.append(
                Turn("user", " ".join(rng.choices(WORDS, k=max(3, int(rng.lognormvariate(3.0, 0.8))))))
            )
            turns.append(
                Turn("assistant", " ".join(rng.choices(WORDS, k=max(3, int(rng.lognormvariate(4.2, 0.9))))))
            )
        out.append(Conversation(f"c{i}", turns))
    return out


def tokenize_throughput(n: int) -> tuple[float, float]:
    """(conversations per second, seconds for n)."""
    from transformers import AutoTokenizer

    from agentlm.serve.engines.weights import ensure_embedded_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_checkpoint())
    template = get_template("gemma")
    convs = sharegpt_like(n)
    start = time.perf_counter()
    for conv in convs:
        tokenize_conversation(tokenizer, template, conv)
    seconds = time.perf_counter() - start
    return n / seconds, seconds


def packed_vs_padded(steps: int, max_len: int = 2048, batch: int = 8) -> dict[str, tuple[float, float]]:
    """{"padded"|"packed": (real tokens/s, padding share)} on a small Llama, forward + backward."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=8000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_len,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    rng = random.Random(0)

    def example() -> TokenizedExample:
        n = min(max_len, max(16, int(rng.lognormvariate(5.5, 0.9))))
        ids = [1, *(rng.randrange(2, 8000) for _ in range(n - 1))]
        labels = [-100] * (n // 3) + ids[n // 3 :]
        return TokenizedExample(ids, labels)

    examples = [example() for _ in range(steps * batch)]
    rows = packed_rows_stream([len(e.input_ids) for e in examples], max_len)
    layouts = {
        "padded": [padded_batch(examples[i : i + batch], 0) for i in range(0, len(examples), batch)],
        "packed": [packed_batch([examples[i] for i in row], 0, max_len) for row in rows],
    }
    out = {}
    for name, batches in layouts.items():
        model.zero_grad()
        start = time.perf_counter()
        for b in batches:
            model(**b.model_inputs(), labels=b.labels).loss.backward()
        seconds = time.perf_counter() - start
        real = sum(b.real_tokens for b in batches)
        total = sum(b.input_ids.numel() for b in batches)
        out[name] = (real / seconds, 1 - real / total)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=60_000)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rate, seconds = tokenize_throughput(args.conversations)
    print(
        f"tokenize+mask: {rate:.0f} conversations/s; {args.conversations} in {seconds:.1f} s (goal <= 60 s)"
    )
    results = packed_vs_padded(args.steps)
    for name, (tps, share) in results.items():
        print(f"{name}: {tps:.0f} real tokens/s, padding {share:.1%}")
    ratio = results["packed"][0] / results["padded"][0]
    print(
        f"packed / padded = {ratio:.2f}x (goal >= 2x); packed padding {results['packed'][1]:.1%} (goal <= 3 %)"
    )


if __name__ == "__main__":
    main()

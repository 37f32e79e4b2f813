"""Continuous batching in the embedded engine: a request decodes the same in a batch as alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch

from agentlm.serve.engines import (
    EngineError,
    EngineOverloadedError,
    GenerationChunk,
    GenerationRequest,
    InvalidToolSchemaError,
    PromptTooLongError,
)
from agentlm.serve.engines.batching import InPlaceLayer, InPlaceSlidingLayer, PaddedBatch
from agentlm.serve.engines.embedded import EmbeddedEngine

PROMPTS = [
    "hi",
    "What is the leave policy for new employees?",
    "Schedule a meeting with the team on Monday at ten, and tell me who is free.",
    "Explain",
    "Tell me about the office and the people who work there, in detail please.",
]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path):
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, max_batch_size=4, max_queue=64)
    yield engine
    engine.close()


def request(prompt: str, **kw) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": prompt}], **{"max_tokens": 24, "temperature": 0, **kw}
    )


async def collect(
    engine: EmbeddedEngine, req: GenerationRequest, delay: float = 0.0
) -> list[GenerationChunk]:
    await asyncio.sleep(delay)
    return [c async for c in engine.generate(req)]


def text(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


async def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_greedy_replies_are_the_same_alone_and_in_a_batch(engine: EmbeddedEngine) -> None:
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, engine.running)
            await asyncio.sleep(0.001)

    async def scenario() -> tuple[list, list]:
        alone = [await collect(engine, request(p)) for p in PROMPTS]
        watcher = asyncio.create_task(watch())
        # Five requests on four rows, arriving while others decode: rows join and leave mid-way.
        together = await asyncio.gather(
            *(collect(engine, request(p), delay=0.005 * i) for i, p in enumerate(PROMPTS))
        )
        await wait_until(lambda: engine.running == 0)  # every row left once its reply ended
        watcher.cancel()
        return alone, together

    alone, together = asyncio.run(scenario())
    assert peak >= 3  # they really shared the batch
    assert [text(c) for c in together] == [text(c) for c in alone]
    for a, b in zip(alone, together, strict=True):
        assert (b[-1].finish_reason, b[-1].completion_tokens) == (
            a[-1].finish_reason,
            a[-1].completion_tokens,
        )
        assert b[-1].prompt_tokens == a[-1].prompt_tokens


def test_a_burst_reaching_an_idle_engine_is_prefilled_as_one_group(
    engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    prefill = PaddedBatch.prefill

    def counted(self: PaddedBatch, prompts: list[list[int]]):
        groups.append(len(prompts))
        return prefill(self, prompts)

    monkeypatch.setattr(PaddedBatch, "prefill", counted)

    async def burst(gap: float) -> None:
        # Similar lengths, so that padding does not split the group; one request each `gap` seconds.
        same = [request(f"What is the leave policy for team {i}?", max_tokens=4) for i in range(4)]
        await asyncio.gather(*(collect(engine, r, delay=gap * i) for i, r in enumerate(same)))
        await wait_until(lambda: engine.running == 0)

    asyncio.run(burst(0.001))  # concurrent calls arrive a millisecond or so apart
    assert groups == [4]
    groups.clear()
    asyncio.run(burst(0.2))  # requests far apart are not held back for each other
    assert groups == [1, 1, 1, 1]


def test_a_seeded_request_draws_the_same_whatever_shares_its_batch(engine: EmbeddedEngine) -> None:
    seeded = request(PROMPTS[1], temperature=1.0, top_p=0.9, seed=1234)

    async def scenario() -> tuple[str, str, str]:
        alone = text(await collect(engine, seeded))
        others = [request(p, temperature=1.0, max_tokens=40) for p in PROMPTS[2:]]  # unseeded
        *_, together = await asyncio.gather(
            *(collect(engine, r) for r in others), collect(engine, seeded, 0.05)
        )
        other_seed = text(await collect(engine, request(PROMPTS[1], temperature=1.0, top_p=0.9, seed=99)))
        return alone, text(together), other_seed

    alone, together, other_seed = asyncio.run(scenario())
    assert together == alone
    assert other_seed != alone  # the seed matters (a random tiny model rambles differently)


def test_stops_and_token_limits_apply_per_sequence(engine: EmbeddedEngine) -> None:
    async def scenario() -> list[list[GenerationChunk]]:
        full = text(await collect(engine, request(PROMPTS[2])))
        stop = full[len(full) // 2 : len(full) // 2 + 3]
        assert stop.strip(), full
        return (
            await asyncio.gather(
                collect(engine, request(PROMPTS[2], stop=[stop])),
                collect(engine, request(PROMPTS[1], max_tokens=5)),
                collect(engine, request(PROMPTS[3], max_tokens=0)),
                collect(engine, request(PROMPTS[4], max_tokens=30)),
            ),
            full,
            stop,
        )

    (stopped, short, empty, long), full, stop = asyncio.run(scenario())
    assert text(stopped) == full[: full.index(stop)] and stopped[-1].finish_reason == "stop"
    assert short[-1].completion_tokens <= 5
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in empty] == [("", 0, "length")]
    assert long[-1].completion_tokens <= 30 and long[-1].finish_reason in ("stop", "length")
    assert all(c.finish_reason is None for c in long[:-1])


def test_closing_the_stream_removes_the_sequence_from_the_batch(engine: EmbeddedEngine) -> None:
    async def scenario() -> str:
        streams = [engine.generate(request(p, max_tokens=3000)) for p in PROMPTS[:3]]
        for s in streams:
            await anext(s)
        await wait_until(lambda: engine.running == 3)
        await streams[1].aclose()
        await wait_until(lambda: engine.running == 2)
        for s in (streams[0], streams[2]):
            await s.aclose()
        await wait_until(lambda: engine.running == 0)
        return text(await collect(engine, request(PROMPTS[0], max_tokens=4)))

    assert isinstance(asyncio.run(scenario()), str)


def test_a_newcomer_that_fails_to_join_is_told_and_the_running_rows_carry_on(
    engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = text(asyncio.run(collect(engine, request(PROMPTS[1], max_tokens=200))))

    def join_fails(self, rows):
        raise MemoryError("out of memory")

    async def scenario() -> str:
        # The count of the run before may still be 1 (the last chunk is sent before it updates).
        await wait_until(lambda: engine.running == 0)
        running = asyncio.create_task(collect(engine, request(PROMPTS[1], max_tokens=200)))
        await wait_until(lambda: engine.running == 1)
        with monkeypatch.context() as patch:
            patch.setattr(PaddedBatch, "join", join_fails)
            with pytest.raises(EngineError, match="generation failed: MemoryError: out of memory"):
                await collect(engine, request(PROMPTS[2]))
        replied = text(await running)
        await wait_until(lambda: engine.running == 0)  # no row of the failed newcomer stays behind
        return replied

    assert asyncio.run(scenario()) == alone


def test_refusals(tiny_checkpoint: Path) -> None:
    engine = EmbeddedEngine(str(tiny_checkpoint), num_threads=1, max_batch_size=1, max_queue=1)

    async def scenario() -> None:
        running = engine.generate(request(PROMPTS[0], max_tokens=3000))
        await anext(running)  # decoding in the only row
        waiting = asyncio.create_task(collect(engine, request(PROMPTS[1], max_tokens=2)))
        await wait_until(lambda: engine._jobs.qsize() == 1)
        with pytest.raises(EngineOverloadedError, match="1 requests are already waiting"):
            await anext(engine.generate(request(PROMPTS[2])))
        await running.aclose()
        assert (await waiting)[-1].finish_reason is not None  # the queued one ran once a row was free

        broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "strange"}}}
        with pytest.raises(InvalidToolSchemaError, match="tool 'f': parameters must be a JSON schema"):
            await anext(engine.generate(request("hi", tools=[broken])))
        with pytest.raises(PromptTooLongError, match="context window is 4096"):
            await anext(engine.generate(request("word " * 5000)))
        assert text(await collect(engine, request("hi", max_tokens=2))) is not None  # still serving

    try:
        asyncio.run(scenario())
    finally:
        engine.close()


def test_waiting_prompts_are_prefilled_together_while_padding_stays_small() -> None:
    from collections import deque

    from agentlm.serve.engines.embedded import _Job, _prefill_group, _Sequence

    def waiting(*lengths: int, cancelled: tuple[int, ...] = ()) -> deque:
        items = deque()
        for i, n in enumerate(lengths):
            job = _Job(request("x"), emit=lambda item: None)
            if i in cancelled:
                job.cancelled.set()
            items.append((_Sequence(job, n, 8, None, None), list(range(n))))
        return items

    def sizes(queue: deque) -> list[list[int]]:
        groups = []
        while queue:
            groups.append([len(ids) for _, ids in _prefill_group(queue)])
        return groups

    assert sizes(waiting(40, 42, 38, 41)) == [[40, 42, 38, 41]]  # similar lengths: one forward
    assert sizes(waiting(40, 10, 41)) == [[40], [10], [41]]  # padding 10 to 40 wastes too much
    assert sizes(waiting(600, 610, 620, 630)) == [[600, 610, 620], [630]]  # 2048 padded tokens at most
    assert sizes(waiting(3000)) == [[3000]]  # a long prompt still runs, alone
    assert sizes(waiting(40, 40, 40, cancelled=(1,))) == [[40, 40]]  # abandoned ones are dropped


def test_padded_batch_rows_match_lone_runs_across_joins_leaves_and_sliding_windows(tiny_gemma) -> None:
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16], [20], [30, 31, 32, 33, 34]]
    feed = [[(3 * i + 7 * s) % 120 + 2 for s in range(12)] for i in range(len(prompts))]

    def lone(i: int, steps: int) -> list[torch.Tensor]:
        batch = PaddedBatch(tiny_gemma)
        alone = batch.prefill([prompts[i]])
        batch.join(alone)
        return [alone.logits[0]] + [batch.step([feed[i][s]])[0] for s in range(steps)]

    with torch.inference_mode():
        expected = {i: lone(i, 10) for i in range(len(prompts))}
        batch = PaddedBatch(tiny_gemma)
        rows: list[int] = []  # which prompt each row decodes
        done = {i: 0 for i in range(len(prompts))}  # steps taken
        # step -> prompts that join before it; 0 and 1 are prefilled together, left-padded (3 and 8
        # tokens, the longer past the 4-token window)
        joins = {0: [0, 1], 3: [2], 6: [3]}
        for step in range(12):
            if step in joins:
                prefilled = batch.prefill([prompts[i] for i in joins[step]])
                for r, i in enumerate(joins[step]):
                    torch.testing.assert_close(prefilled.logits[r], expected[i][0], atol=1e-5, rtol=1e-4)
                batch.join(prefilled)
                rows.extend(joins[step])
            if step == 5:  # the longest prompt leaves: the others' padding columns go too
                batch.keep([r for r, i in enumerate(rows) if i != 1])
                rows.remove(1)
                assert batch.width < 8 + 5 + 1
            logits = batch.step([feed[i][done[i]] for i in rows])
            for r, i in enumerate(rows):
                done[i] += 1
                if done[i] <= 10:
                    torch.testing.assert_close(logits[r], expected[i][done[i]], atol=1e-5, rtol=1e-4)
        assert all(layer.keys.shape[-2] <= 3 for layer in batch.cache.layers[:1])  # the window's cap
        assert batch.cache.layers[1].keys.shape[-2] == batch.width
        batch.keep([])
        assert len(batch) == 0 and batch.cache is None


def test_a_join_that_fails_part_way_leaves_the_batch_as_it_was(tiny_gemma, monkeypatch) -> None:
    from agentlm.serve.engines import batching

    with torch.inference_mode():
        batch, spared = PaddedBatch(tiny_gemma), PaddedBatch(tiny_gemma)
        for b in (batch, spared):
            b.join(b.prefill([[5, 6, 7], [9, 10, 11, 12]]))
            b.step([40, 41])
        newcomer = batch.prefill([[20, 21, 22, 23, 24, 25, 26, 27]])  # wider: every layer must grow
        calls = 0
        real_cat = torch.cat

        def cat_fails_on_the_third_call(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == 3:  # the second layer's keys: the first layer is already stacked
                raise MemoryError("out of memory")
            return real_cat(*args, **kwargs)

        monkeypatch.setattr(batching.torch, "cat", cat_fails_on_the_third_call)
        with pytest.raises(MemoryError):
            batch.join(newcomer)
        monkeypatch.setattr(batching.torch, "cat", real_cat)
        assert len(batch) == 2 and batch.width == spared.width
        assert all(layer.keys.shape[0] == 2 for layer in batch.cache.layers)
        torch.testing.assert_close(batch.step([50, 51]), spared.step([50, 51]))


def test_in_place_cache_layers_match_transformers_own_and_copy_only_now_and_then(tiny_gemma) -> None:
    from transformers import DynamicCache

    prompt = [5, 6, 7, 8, 9]
    tokens = [(7 * s) % 120 + 2 for s in range(150)]  # far past the window and several buffer refills
    with torch.inference_mode():
        cache = DynamicCache(config=tiny_gemma.config)
        out = tiny_gemma(input_ids=torch.tensor([prompt]), cache=cache, use_cache=True)
        expected = [out.logits[0, -1]]
        for t in tokens:
            expected.append(
                tiny_gemma(input_ids=torch.tensor([[t]]), cache=cache, use_cache=True).logits[0, -1]
            )

        batch = PaddedBatch(tiny_gemma)
        ours = batch.prefill([prompt])
        assert [type(layer) for layer in ours.cache.layers] == [InPlaceSlidingLayer, InPlaceLayer]
        batch.join(ours)
        torch.testing.assert_close(ours.logits[0], expected[0])
        buffers = set()
        for step, t in enumerate(tokens, 1):
            torch.testing.assert_close(batch.step([t])[0], expected[step], atol=1e-5, rtol=1e-4)
            buffers.add(tuple(layer._buffers[0].data_ptr() for layer in batch.cache.layers))
        assert batch.cache.layers[0].keys.shape[-2] == 3  # the 4-token window's last W - 1
        assert batch.cache.layers[1].keys.shape[-2] == len(prompt) + len(tokens)
    assert len(buffers) <= 6  # a handful of reallocations in 150 steps, not one a step


@pytest.mark.slow
def test_embedded_gemma_decodes_the_same_in_a_batch_as_alone() -> None:
    engine = EmbeddedEngine()
    prompts = ["Name a colour.", "Write a poem about the sea.", "Why is the sky blue?", "List five fruits."]

    async def scenario() -> tuple[list[str], list[str]]:
        alone = [text(await collect(engine, request(p, max_tokens=16))) for p in prompts]
        together = await asyncio.gather(*(collect(engine, request(p, max_tokens=16)) for p in prompts))
        return alone, [text(c) for c in together]

    try:
        alone, together = asyncio.run(scenario())
    finally:
        engine.close()
    assert together == alone

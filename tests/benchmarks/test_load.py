"""The load benchmark (benchmarks/load.py) for a few seconds against a real server on a scripted engine.

The model is not what is measured here: the engine answers every request at once with a final
answer, so both agents, both kinds of chat, follow-ups and feedback run in seconds; the test checks
the script's bookkeeping, its JSON and its exit status.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmark_scripts import load_benchmark
from scripted import scripted_server

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "I have it.\nAction: Answer\nFinal Answer: ok"


bench = load_benchmark("load")


def _run(tmp_path: Path, context_chars: int | None = None) -> tuple[int, dict]:
    profiles = ("hr-assistant", "scheduling-assistant")
    with scripted_server(str(tmp_path / "store.sqlite3"), profiles=profiles) as (v1, engine):
        engine.script(*[ANSWER] * 100_000)
        engine.context_chars = context_chars
        out = tmp_path / "load.json"
        argv = ["--url", v1, "--pid", str(os.getpid()), "--sessions", "4", "--duration", "2"]
        code = bench.main([*argv, "--sample-every", "0.2", "--warmup", "0.5", "--json", str(out)])
    return code, json.loads(out.read_text())


def test_every_kind_runs_without_errors_and_memory_is_sampled(tmp_path: Path, capsys) -> None:
    code, fig = _run(tmp_path)
    kinds = fig["kinds"]
    assert code == 0 and fig["errors"] == []
    for kind in ("hr-assistant", "scheduling-assistant", "chat", "chat stream", "feedback"):
        assert kinds[kind]["requests"] > 0 and kinds[kind]["errors"] == 0, kind
        assert kinds[f"{kind} follow-up" if kind != "feedback" else kind]["requests"] > 0
    assert kinds["chat stream"]["ttft_p50_s"] is not None and kinds["chat"]["ttft_p50_s"] is None
    assert kinds["hr-assistant"]["stop_reasons"] == {"answer": kinds["hr-assistant"]["requests"]}
    assert kinds["all"]["turns_per_min"] > 0
    # One feedback per agent conversation, on the conversation's last run.
    agents = kinds["hr-assistant"]["requests"] + kinds["scheduling-assistant"]["requests"]
    assert kinds["feedback"]["requests"] == agents
    memory = fig["memory"]
    assert memory["samples"] >= 3 and memory["start_mib"] > 0 and "slope_mib_per_min" in memory
    printed = capsys.readouterr().out
    assert "errors: 0" in printed and "memory verdict:" in printed


def test_refused_requests_are_errors_and_fail_the_run(tmp_path: Path, capsys) -> None:
    code, fig = _run(tmp_path, context_chars=1)  # every prompt is too long: 400
    assert code == 1
    assert fig["kinds"]["chat"]["errors"] == fig["kinds"]["chat"]["requests"] > 0
    assert any(text.startswith("HTTP 400") for _, text in fig["errors"])
    assert "(goal 0)" in capsys.readouterr().out

"""agentlm data stats: per-source counts that follow the training loss rules, and a PNG."""

from __future__ import annotations

from pathlib import Path

from agentlm.data.collect import collect, scripted_teacher
from agentlm.data.formats import Conversation, Turn, write_jsonl
from agentlm.data.stats import compute, main

AGENTBENCH = Path(__file__).resolve().parents[3] / "shared" / "agentbench"


def words(text: str) -> int:
    return len(text.split())


def test_counts_follow_the_loss_flags_and_sources(tmp_path):
    agent = Conversation(
        "a",
        [
            Turn("user", "one two"),
            Turn("assistant", "ok", False),
            Turn("user", "three"),
            Turn("assistant", "four five six", True),
        ],
        source="agent",
    )
    chat = Conversation("c", [Turn("user", "hi there"), Turn("assistant", "hello you all")], source="general")
    write_jsonl(tmp_path / "mix.jsonl", [agent, chat, chat])
    stats = compute([tmp_path / "mix.jsonl"], words)
    assert (stats["agent"].examples, stats["agent"].tokens, stats["agent"].trainable_tokens) == (1, 7, 3)
    assert (stats["general"].examples, stats["general"].trainable_tokens, stats["general"].turns) == (2, 6, 4)


def test_collected_data_reports_repairs_and_the_command_writes_a_png(tmp_path, capsys):
    from agentlm.agent.envs.db import DBEnvironment

    env = DBEnvironment()
    collect(
        env,
        env.load(AGENTBENCH / "dbbench_dev.jsonl")[:8],
        tmp_path / "db.jsonl",
        scripted_teacher,
        progress=False,
    )
    png = tmp_path / "stats.png"
    main([str(tmp_path / "db.jsonl"), "--plot", str(png)])
    printed = capsys.readouterr().out
    assert "collect" in printed and "total" in printed and "0.0%" in printed  # scripted: nothing repaired
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

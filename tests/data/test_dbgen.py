"""Generated database tasks: AgentBench's record shape, verified references, held-out domains."""

from __future__ import annotations

import json

from agentlm.agent.envs.db import DBEnvironment
from agentlm.data.collect import collect, scripted_teacher
from agentlm.data.dbgen import HELDOUT_DOMAINS, KINDS, TRAIN_DOMAINS, generate, label_and_verify, main


def test_generated_tasks_have_dbbench_shape_and_their_references_pass(tmp_path):
    records, dropped = label_and_verify(generate(TRAIN_DOMAINS, 40, seed=3))
    assert dropped == 0 and len(records) == 40
    assert {r["type"][0] for r in records} >= {"INSERT", "UPDATE", "counting", "other"}
    for r in records:
        assert set(r) >= {"description", "label", "table", "type", "heads", "add_description", "sql"}
        assert r["label"], r  # queries got their labels from running the gold SQL
        assert all(c["type"] == "TEXT" for c in r["table"]["table_info"]["columns"])
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = DBEnvironment()
    tasks = env.load(path)
    assert [reward for _, reward, _ in env.verify(tasks)] == [1.0] * 40
    # The scripted teacher turns every one into a training trajectory.
    assert collect(env, tasks, tmp_path / "traj.jsonl", scripted_teacher, progress=False).kept == 40


def test_generation_is_deterministic_and_held_out_domains_share_nothing_with_training():
    assert generate(TRAIN_DOMAINS, 10, seed=1) == generate(TRAIN_DOMAINS, 10, seed=1)
    assert generate(TRAIN_DOMAINS, 10, seed=1) != generate(TRAIN_DOMAINS, 10, seed=2)
    train_words = {w for d in TRAIN_DOMAINS for w in (d.table, d.key, *d.text, *d.numbers)}
    heldout_words = {w for d in HELDOUT_DOMAINS for w in (d.table, d.key, *d.text, *d.numbers)}
    assert not train_words & heldout_words
    assert set(KINDS) >= {"INSERT", "UPDATE", "ranking"}


def test_the_command_writes_only_verified_tasks(tmp_path, capsys):
    main(["--domains", "heldout", "--tasks", "12", "--seed", "4", "--out", str(tmp_path / "h.jsonl")])
    assert "wrote 12 verified tasks" in capsys.readouterr().out
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 12

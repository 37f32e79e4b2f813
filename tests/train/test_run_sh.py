"""train/run.sh: its options and errors, one whole short run (no trajectory store yet), and the
promotion loop: the decision's rules, the script's keep/promote paths with training and evaluation
stubbed out, and one whole run that collects, trains, evaluates and promotes with a tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import build_tiny_model

from agentlm.data.dbgen import main as dbgen
from agentlm.data.formats import Conversation, Turn, write_jsonl
from agentlm.train.eval import EvalRow
from agentlm.train.promote import KEEP, decide, not_worse
from agentlm.train.promote import main as promote_main

RUN = Path(__file__).resolve().parents[2] / "train" / "run.sh"


def run(*args):
    return subprocess.run(["bash", str(RUN), *args], capture_output=True, text=True, timeout=60)


def test_help_lists_the_options():
    result = run("--help")
    assert result.returncode == 0
    for option in ("--base-model", "--output", "--preset", "--eta", "--store", "--agent-data"):
        assert option in result.stdout


def test_missing_and_unknown_options_fail_with_a_message():
    result = run("--output", "x")
    assert result.returncode == 2 and "--base-model is required" in result.stderr
    result = run("--base-model", "b", "--output", "x", "--frobnicate")
    assert result.returncode == 2 and "unknown option --frobnicate" in result.stderr
    result = run("--base-model", "b", "--output", "x", "--preset", "huge")
    assert result.returncode == 2 and "no preset 'huge'" in result.stderr


def test_the_whole_run_mixes_bundled_and_extra_data_and_writes_a_checkpoint(tmp_path):
    """No store yet: run.sh says so, mixes bundled + extra agent data with general chat, trains, saves."""
    extra = tmp_path / "extra.jsonl"
    write_jsonl(
        extra, [Conversation("x1", [Turn("user", "Who are you?"), Turn("assistant", "An agent.")], "extra")]
    )
    base = build_tiny_model(tmp_path / "base", ["Who are you?", "An agent."] * 20, vocab_size=400)
    out = tmp_path / "ckpt"
    result = subprocess.run(
        ["bash", str(RUN), "--base-model", str(base), "--output", str(out), "--store", str(tmp_path / "none.sqlite3"),
         "--agent-data", str(extra), "--eta", "0.5", "--max-steps", "2", "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "no trajectory store at" in result.stdout
    assert "agent share 0.500" in result.stdout and "extra: 1 examples" in result.stdout
    assert "final_loss=" in result.stdout and f"checkpoint: {out}" in result.stdout
    card = (out / "README.md").read_text()
    assert "eta = 0.5" in card and "extra: 1 examples" in card and "optimizer steps: 2" in card


def test_multi_node_training_builds_the_deepspeed_launcher_command(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node1 slots=8\nnode2 slots=8\n")
    env = {**os.environ, "PYTHON": sys.executable, "AGENTLM_HOME": str(tmp_path / "home")}
    args = ["bash", str(RUN), "--base-model", "meta-llama/Llama-2-7b-chat-hf", "--output", str(tmp_path / "out"),
            "--preset", "llama2-7b", "--hostfile", str(hostfile), "--num-nodes", "2", "--num-gpus", "8", "--dry-run"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1].split()
    assert command[:8] == [
        "deepspeed",
        "--hostfile",
        str(hostfile),
        "--num_nodes",
        "2",
        "--num_gpus",
        "8",
        "--module",
    ]
    assert command[8] == "agentlm.train.sft"
    flags = dict(zip(command[9::2], command[10::2], strict=False))
    assert flags["--config"] == "llama2-7b" and flags["--base-model"] == "meta-llama/Llama-2-7b-chat-hf"
    assert flags["--data"] == str(tmp_path / "out.work" / "train.jsonl")
    assert (tmp_path / "out.work" / "train.jsonl").is_file()  # export and mix ran; training did not
    assert not (tmp_path / "out").exists()
    missing = run("--base-model", "b", "--output", str(tmp_path / "x"), "--hostfile", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no hostfile at" in missing.stderr


def row(tasks=None, mc=None, ppl=None, model="m"):
    return EvalRow(model=model, tasks=tasks or {}, mc_accuracy=mc, perplexity=ppl)


def test_not_worse_compares_mean_success_mc_within_points_and_perplexity_within_percent():
    prev = row({"a": 0.5, "b": 0.3}, mc=0.50, ppl=10.0)
    assert not_worse(None, prev).promote  # nothing in service yet
    assert not_worse(prev, prev).promote and len(not_worse(prev, prev).checks) == 3
    # agent success: the mean over the task files both rows have, not each file
    assert not_worse(prev, row({"a": 0.7, "b": 0.1}, mc=0.50, ppl=10.0)).promote
    lower = not_worse(prev, row({"a": 0.5, "b": 0.2, "new": 1.0}, mc=0.50, ppl=10.0))
    assert not lower.promote and "mean agent success (a, b)" in lower.reason
    # general MC may fall by `tolerance` points, no more
    assert not_worse(prev, row({"a": 0.5, "b": 0.3}, mc=0.48, ppl=10.0)).promote
    fell = not_worse(prev, row({"a": 0.5, "b": 0.3}, mc=0.47, ppl=10.0))
    assert not fell.promote and fell.reason.startswith("worse on general MC")
    assert not_worse(prev, row({"a": 0.5, "b": 0.3}, mc=0.47, ppl=10.0), tolerance=5).promote
    # perplexity may rise by 2 %
    assert not_worse(prev, row({"a": 0.5, "b": 0.3}, mc=0.5, ppl=10.2)).promote
    assert not not_worse(prev, row({"a": 0.5, "b": 0.3}, mc=0.5, ppl=10.3)).promote
    # a metric one row lacks is not compared; with none in common, nothing shows it is not worse
    assert not_worse(prev, row({"a": 0.5, "b": 0.3})).checks == [
        "mean agent success (a, b): 40.0% -> 40.0% ok"
    ]
    assert not not_worse(row(mc=0.5), row({"a": 1.0})).promote


def test_the_promote_entry_point_reads_eval_rows_and_exits_3_to_keep(tmp_path, capsys):
    eval_json, out = tmp_path / "eval.json", tmp_path / "promotion.json"
    eval_json.write_text(
        json.dumps([row({"a": 0.5}, model="old").__dict__, row({"a": 0.25}, model="new").__dict__])
    )
    with pytest.raises(SystemExit) as exit_:
        promote_main(["--eval", str(eval_json), "--out", str(out), "--checkpoint", "new", "--link", "cur"])
    assert exit_.value.code == KEEP
    assert "mean agent success (a): 50.0% -> 25.0% worse" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["promote"] is False and record["previous"]["model"] == "old" and record["link"] == "cur"
    eval_json.write_text(json.dumps([row({"a": 0.25}, model="new").__dict__]))
    assert decide(eval_json).promote and decide(None).promote  # no previous checkpoint: promote
    eval_json.write_text(json.dumps([row().__dict__] * 3))
    with pytest.raises(ValueError, match="3 rows"):
        decide(eval_json)


def test_promotion_options_are_checked_before_any_work(tmp_path):
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("")
    base = ["--base-model", "b", "--output", str(tmp_path / "new")]
    result = run(*base, "--collect", str(tmp_path / "none.jsonl"))
    assert result.returncode == 2 and "no --collect file at" in result.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "t.jsonl").write_text("")
    result = run(*base, "--eval-tasks", str(tasks), "--eval-tasks", str(tmp_path / "d" / "t.jsonl"))
    assert result.returncode == 2 and "share the name 't'" in result.stderr
    result = run(*base, "--teacher", "gpt-4")
    assert result.returncode == 2 and "--teacher gpt-4 needs --teacher-url" in result.stderr
    (tmp_path / "dir").mkdir()
    result = run(*base, "--promote", str(tmp_path / "dir"))
    assert result.returncode == 2 and "is not a symlink" in result.stderr
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    result = run(*base, "--promote", str(tmp_path / "dangling"))
    assert result.returncode == 2 and "which is missing" in result.stderr
    result = run(*base, "--previous", str(tmp_path / "new"))
    assert result.returncode == 2 and "no previous checkpoint at" in result.stderr
    result = run("--base-model", "b", "--output", str(tmp_path / "dir"), "--previous", str(tmp_path / "dir"))
    assert result.returncode == 2 and "is the checkpoint in service" in result.stderr
    result = run(*base, "--previous", str(tmp_path / "dir"), "--no-general")
    assert result.returncode == 2 and "nothing to compare on" in result.stderr


STUB = """#!{python}
# Stands in for python: fakes agentlm.train.sft, .preference and .eval (logging their arguments), runs the rest.
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] in (["-m", "agentlm.train.sft"], ["-m", "agentlm.train.eval"], ["-m", "agentlm.train.preference"]):
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    if args[1] != "agentlm.train.eval":
        Path(args[args.index("--output-dir") + 1]).mkdir(parents=True, exist_ok=True)
    else:
        Path(args[args.index("--json") + 1]).write_text(os.environ["STUB_EVAL"])
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *args])
"""


def test_a_first_run_promotes_and_a_worse_second_one_keeps_the_link_reusing_what_was_collected(tmp_path):
    """Training and evaluation stubbed: collection, the eval command, the decision and the link are real."""
    dbgen(["--domains", "train", "--tasks", "4", "--out", str(tmp_path / "db_tasks.jsonl")])
    dbgen(["--domains", "heldout", "--tasks", "2", "--seed", "1", "--out", str(tmp_path / "heldout.jsonl")])
    stub = tmp_path / "python"
    stub.write_text(STUB.replace("{python}", sys.executable))
    stub.chmod(0o755)
    log, link, work = tmp_path / "calls.jsonl", tmp_path / "runs" / "current", tmp_path / "work"

    def run_sh(output, rows, *extra):
        env = {**os.environ, "PYTHON": str(stub), "STUB_LOG": str(log), "STUB_EVAL": json.dumps(rows)}
        args = ["bash", str(RUN), "--base-model", "b", "--output", str(output), "--store", str(tmp_path / "none"),
                "--workdir", str(work), "--collect", str(tmp_path / "db_tasks.jsonl"),
                "--eval-tasks", str(tmp_path / "heldout.jsonl"), "--promote", str(link), *extra]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout, [json.loads(line) for line in log.read_text().splitlines()]

    # 1. nothing in service: the new checkpoint is evaluated alone (for the record) and promoted
    first = tmp_path / "runs" / "first"
    out, calls = run_sh(first, [row({"heldout": 0.5}, mc=0.5, ppl=10.0, model=str(first)).__dict__])
    collected = work / "collected-db_tasks.jsonl"
    kept = len(collected.read_text().splitlines())
    assert kept >= 1 and f"collect/db/scripted: {kept} examples" in out
    assert calls[-1][:5] == ["-m", "agentlm.train.eval", "--model", str(first), "--tasks"]
    assert link.is_symlink() and link.resolve() == first.resolve()
    assert f"promoted: {link} -> {first}" in out
    assert json.loads((work / "promotion.json").read_text())["promote"] is True

    # 2. a worse one: compared with the link's target, eval options passed through, the link kept
    second = tmp_path / "runs" / "second"
    rows = [row({"heldout": 0.5}, mc=0.5, model=str(first)).__dict__, row({"heldout": 0.0}, mc=0.5).__dict__]
    out, calls = run_sh(second, rows, "--eval-limit", "2", "--eval-max-tokens", "16", "--eval-max-rounds", "3",
                        "--eval-parallel", "1", "--no-general", "--tolerance", "5")  # fmt: skip
    assert f"{kept} already collected" in out and f"collect/db/scripted: {kept} examples" in out
    assert calls[-1] == ["-m", "agentlm.train.eval", "--model", str(first), "--model", str(second),
                         "--tasks", str(tmp_path / "heldout.jsonl"), "--no-general", "--limit", "2",
                         "--max-tokens", "16", "--max-rounds", "3", "--parallel", "1",
                         "--json", str(work / "eval.json")]  # fmt: skip
    assert "mean agent success (heldout): 50.0% -> 0.0% worse" in out
    assert f"not promoted: the new checkpoint at {second} is worse than {first}" in out
    assert link.resolve() == first.resolve()
    decision = json.loads((work / "promotion.json").read_text())
    assert (
        decision["promote"] is False
        and decision["tolerance"] == 5.0
        and decision["checkpoint"] == str(second)
    )


@pytest.mark.slow
def test_the_whole_loop_collects_trains_evaluates_against_the_served_checkpoint_and_promotes(tmp_path):
    """A tiny model in service (runs/current): collect with the scripted teacher, train 2 steps,
    evaluate both on 2 held-out DB tasks and general ability, repoint runs/current to the new one."""
    dbgen(["--domains", "train", "--tasks", "4", "--out", str(tmp_path / "db_tasks.jsonl")])
    dbgen(["--domains", "heldout", "--tasks", "2", "--seed", "1", "--out", str(tmp_path / "heldout.jsonl")])
    base = build_tiny_model(tmp_path / "base", ["Who are you?", "An agent.", "SELECT * FROM t;"] * 20, 400)
    current = tmp_path / "runs" / "current"
    current.parent.mkdir()
    current.symlink_to(base)
    new, work = tmp_path / "runs" / "new", tmp_path / "work"
    args = ["bash", str(RUN), "--base-model", str(current), "--output", str(new), "--workdir", str(work),
            "--store", str(tmp_path / "none.sqlite3"), "--collect", str(tmp_path / "db_tasks.jsonl"),
            "--eta", "0.5", "--max-steps", "2", "--eval-tasks", str(tmp_path / "heldout.jsonl"),
            "--eval-max-tokens", "16", "--eval-max-rounds", "1", "--eval-parallel", "2",
            "--tolerance", "100", "--promote", str(current)]  # fmt: skip
    # (--tolerance 100: two steps can move a random tiny model's MC accuracy, near chance, by a few points)
    result = subprocess.run(args, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "collect/db/scripted:" in result.stdout and "final_loss=" in result.stdout
    rows = json.loads((work / "eval.json").read_text())
    assert [r["model"] for r in rows] == [str(base), str(new)]
    assert all(set(r["tasks"]) == {"heldout"} and r["mc_accuracy"] is not None for r in rows)
    decision = json.loads((work / "promotion.json").read_text())
    assert decision["promote"] is True and len(decision["checks"]) == 3
    assert current.is_symlink() and current.resolve() == new.resolve()
    assert f"promoted: {current} -> {new} (was {base})" in result.stdout


def test_the_preference_stage_learns_from_the_stores_feedback_after_sft_or_alone(tmp_path):
    """Training stubbed: the feedback export, the stage order, and what each recipe is given are real."""
    from agentlm.agent.trajectory import Feedback, FinalAnswerStep, StopReason, Trajectory
    from agentlm.serve.store import open_store

    store = tmp_path / "store.sqlite3"
    with open_store(store) as trajectories:
        for i, feedback in enumerate([Feedback(1), Feedback(-1), Feedback(-1, corrected_answer="ten")]):
            run_ = Trajectory(task=f"q{i}", profile="hr-assistant", model="m",
                              prompt=[{"role": "user", "content": "Go."}, {"role": "assistant", "content": "Ok."}],
                              steps=[FinalAnswerStep(0, "Action: Answer\nFinal Answer: 9", "", "9")],
                              stop_reason=StopReason.ANSWER)  # fmt: skip
            trajectories.save(run_)
            trajectories.set_feedback(run_.id, feedback)
    stub = tmp_path / "python"
    stub.write_text(STUB.replace("{python}", sys.executable))
    stub.chmod(0o755)
    log, out, work = tmp_path / "calls.jsonl", tmp_path / "new", tmp_path / "work"
    env = {**os.environ, "PYTHON": str(stub), "STUB_LOG": str(log)}
    args = ["bash", str(RUN), "--base-model", "b", "--output", str(out), "--store", str(store), "--workdir", str(work),
            "--preference", "--beta", "0.2", "--set", "lr=1e-4"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 corrections (pairs), 1 liked, 1 disliked" in result.stdout
    sft, pref = [json.loads(line) for line in log.read_text().splitlines()]
    flags = lambda call: dict(zip(call[2::2], call[3::2], strict=False))  # noqa: E731
    assert sft[1] == "agentlm.train.sft" and flags(sft)["--output-dir"] == str(work / "sft")
    assert pref[1] == "agentlm.train.preference"
    assert pref[pref.index("--base-model") + 1] == str(work / "sft")
    assert pref[pref.index("--output-dir") + 1] == str(out)
    assert pref[pref.index("--data") + 1] == str(work / "preferences.jsonl")
    assert "beta=0.2" in pref and "lr=1e-4" in pref and "init_adapter=null" in pref
    assert len((work / "preferences.jsonl").read_text().splitlines()) == 3

    # --no-sft: the preference stage alone, from the base, on the given records as well
    log.unlink()
    extra = tmp_path / "more.jsonl"
    extra.write_text((work / "preferences.jsonl").read_text())
    args = [*args, "--no-sft", "--preference-data", str(extra)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (pref,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert pref[1] == "agentlm.train.preference" and pref[pref.index("--base-model") + 1] == "b"
    assert [pref[i + 1] for i, a in enumerate(pref) if a == "--data"] == [
        str(extra),
        str(work / "preferences.jsonl"),
    ]
    assert "== 1/6" not in result.stdout and "init_adapter=null" not in pref

    # nothing to learn from: said, before any training
    empty = subprocess.run(
        ["bash", str(RUN), "--base-model", "b", "--output", str(out), "--store", str(tmp_path / "none"), "--no-sft"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert empty.returncode == 2 and "no feedback to learn from" in empty.stderr

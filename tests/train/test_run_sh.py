"""train/run.sh: its options and errors, and one whole short run (no trajectory store yet)."""

import os
import subprocess
import sys
from pathlib import Path

from tiny import build_tiny_model

from agentlm.data.formats import Conversation, Turn, write_jsonl

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

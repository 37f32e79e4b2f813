import subprocess
import sys

import pytest


def agentlm(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "agentlm.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_help_lists_every_subcommand():
    out = agentlm("--help").stdout
    for command in ("up", "serve", "ui", "chat", "data", "train"):
        assert f" {command} " in out


def test_serve_with_a_missing_checkpoint_stops_with_one_line(tmp_path):
    result = agentlm("serve", "--model", str(tmp_path / "nope"), "--port", "0")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no checkpoint at" in lines[0] and "config.json" in lines[0]


def test_export_without_a_store_says_what_to_do(tmp_path):
    result = agentlm(
        "data", "export", "--out", str(tmp_path / "x.jsonl"), "--store", str(tmp_path / "none.sqlite3")
    )
    assert result.returncode == 2 and "no trajectory store" in result.stderr


def test_hr_db_builds_the_sample_database(tmp_path):
    out = tmp_path / "hr.duckdb"
    assert agentlm("data", "hr-db", "--out", str(out)).returncode == 0
    assert out.stat().st_size > 0


def test_train_passes_arguments_to_run_sh():
    result = agentlm("train", "--help")
    assert result.returncode == 0 and "--base-model" in result.stdout


@pytest.mark.parametrize("command", ["chat"])
def test_chat_without_a_server_names_the_url(command):
    result = agentlm(command, "--api-url", "http://127.0.0.1:9/v1")
    assert (
        result.returncode == 2
        and "http://127.0.0.1:9/v1" in result.stderr
        and "agentlm serve" in result.stderr
    )

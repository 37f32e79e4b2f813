import subprocess
import sys
from pathlib import Path

import pytest
from tasksystems import needs_system


def agentlm(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "agentlm.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_help_lists_every_subcommand():
    out = agentlm("--help").stdout
    for command in ("up", "serve", "ui", "chat", "data", "train", "tasks"):
        assert f" {command} " in out


def test_serve_with_a_missing_checkpoint_stops_with_one_line(tmp_path):
    result = agentlm("serve", "--model", str(tmp_path / "nope"), "--port", "0")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no checkpoint at" in lines[0] and "config.json" in lines[0]


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--context-tokens", "100", "greater than or equal to 256"),
        ("--dtype", "fp8", "'auto', 'float32' or 'bfloat16'"),
    ],
)
def test_serve_with_a_setting_out_of_range_names_what_is_allowed(option: str, value: str, says: str):
    result = agentlm("serve", option, value, "--port", "0")
    assert result.returncode == 2
    assert f"invalid settings: {option}:" in result.stderr and says in result.stderr


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


AGENTBENCH = Path(__file__).resolve().parents[2] / "shared" / "agentbench"


def test_tasks_verify_scores_each_reference_and_ends_with_the_tally(tmp_path):
    dev = AGENTBENCH / "dbbench_dev.jsonl"
    result = agentlm("tasks", "verify", str(dev))
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "45/60 passed"
    rows = dict(line.split("\t")[:2] for line in lines[:-1])
    assert len(rows) == 60 and rows["dbbench_dev-00020"] == "1.0"
    assert sum(v == "skip" for v in rows.values()) == 1  # MySQL refuses its table; the line says why
    # A gold statement MySQL rejects shows MySQL's error: a bad task, not a bad environment.
    assert "1054 (42S22): Unknown column 'Wrestler'" in lines[6]
    # Some runnable references miss their own labels: the exit status says so, for scripts.
    assert result.returncode == 1
    # Keeping only the passing tasks gives a file that verifies clean: the data-construction filter.
    kept = [
        line
        for line, row in zip(dev.read_text().splitlines(), lines[:-1], strict=True)
        if row.split("\t")[1] == "1.0"
    ]
    (tmp_path / "kept.jsonl").write_text("\n".join(kept) + "\n")
    clean = agentlm("tasks", "verify", str(tmp_path / "kept.jsonl"))
    assert clean.returncode == 0 and clean.stdout.strip().splitlines()[-1] == "45/45 passed"


def test_tasks_verify_names_a_file_it_cannot_read(tmp_path):
    (tmp_path / "x.json").write_text('[{"question": 1}]')
    result = agentlm("tasks", "verify", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "pass --env db or --env os" in result.stderr


@needs_system
def test_tasks_verify_runs_os_references_as_root_in_task_systems(tmp_path):
    result = agentlm("tasks", "verify", str(AGENTBENCH / "os_dev.json"))
    assert result.stdout.strip().splitlines()[-1] == "26/26 passed" and result.returncode == 0
    # Without AgentBench's scripts folder, the 3 tasks that name script files say which.
    bare = agentlm("tasks", "verify", str(AGENTBENCH / "os_dev.json"), "--scripts", str(tmp_path))
    lines = bare.stdout.strip().splitlines()
    skipped = [line for line in lines if "\tskip\t" in line]
    assert lines[-1] == "23/26 passed" and len(skipped) == 3 and all("--scripts" in s for s in skipped)
    wrong = agentlm("tasks", "verify", str(AGENTBENCH / "os_dev.json"), "--env", "db", "--scripts", ".")
    assert wrong.returncode == 2 and "--scripts is for OS task files" in wrong.stderr


@needs_system
def test_data_collect_writes_agentinstruct_trajectories(tmp_path):
    out = tmp_path / "os.jsonl"
    result = agentlm("data", "collect", "--tasks", str(AGENTBENCH / "os_dev.json"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "21 kept, 0 rejected, 5 unsupported" in result.stdout
    assert len(out.read_text().splitlines()) == 21
    bad = agentlm(
        "data", "collect", "--tasks", str(AGENTBENCH / "os_dev.json"), "--out", str(out), "--teacher", "gpt-4"
    )
    assert bad.returncode == 2 and "needs --base-url" in bad.stderr


def test_data_subcommands_forward_to_their_modules(tmp_path):
    help_text = agentlm("data", "--help").stdout
    for command in ("collect", "general", "pydocs", "mix", "dbgen", "decontaminate", "stats"):
        assert f" {command} " in help_text
    general = tmp_path / "general.jsonl"
    assert agentlm("data", "pydocs", "--out", str(general), "--limit", "30").returncode == 0
    agent = tmp_path / "agent.jsonl"
    agent.write_text(general.read_text().splitlines()[0] + "\n")
    mixed = agentlm("data", "mix", "--agent", str(agent), "--general", str(general), "--eta", "0.2",
                    "--out", str(tmp_path / "mix.jsonl"))  # fmt: skip
    assert mixed.returncode == 0, mixed.stderr
    assert "5 examples, agent share 0.200 (1 agent, 4 general of 30 available)" in mixed.stdout


def test_chat_with_an_agent_keeps_the_conversation_until_new(tmp_path):
    from scripted import hr_opening, scripted_server
    from typer.testing import CliRunner

    from agentlm.cli import app

    def answer(text: str) -> str:
        return f"I have it.\nAction: Answer\nFinal Answer: {text}"

    q1, q2, q3 = "How many vacation days does Dana Kim have left?", "And her manager?", "Who works in Sales?"
    with scripted_server(tmp_path / "store.sqlite3") as (v1, engine):
        engine.script(answer("18 days."), answer("Zoe Kowalski."), answer("Ten people."))
        # Each answer is followed by the feedback question (Enter skips); an empty question quits.
        typed = f"{q1}\n\n{q2}\n\n/new\n{q3}\n\n\n"
        result = CliRunner().invoke(app, ["chat", "--profile", "hr-assistant", "--api-url", v1], input=typed)
        assert result.exit_code == 0, result.output
        assert "18 days." in result.output and "Zoe Kowalski." in result.output
        first, second, third = engine.prompts()
    assert first == [*hr_opening(q1), {"role": "user", "content": q1}]
    assert second == [
        *hr_opening(q1, q2),
        {"role": "user", "content": q1},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: 18 days."},
        {"role": "user", "content": q2},
    ]
    assert third == [*hr_opening(q3), {"role": "user", "content": q3}]  # /new forgot the first two

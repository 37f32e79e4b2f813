import subprocess
from pathlib import Path

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

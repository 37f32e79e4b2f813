"""ShellTool and ShellSession: persistence, AgentBench framing, timeouts, and when there is no sandbox."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from waiting import eventually

from agentlm.agent.protocols import OS_TRUNCATED
from agentlm.agent.tools.sandbox import (
    Bind,
    SandboxLimits,
    SandboxUnavailableError,
    ShellClosedError,
    ShellSession,
    ShellSettings,
    check_sandbox,
    processes_of,
    run_isolated,
)
from agentlm.agent.tools.shell import ShellTool

try:
    check_sandbox()
    _unavailable = None
except SandboxUnavailableError as e:
    _unavailable = str(e)

needs_sandbox = pytest.mark.skipif(_unavailable is not None, reason=f"no bubblewrap sandbox: {_unavailable}")


@pytest.fixture
def tool():
    t = ShellTool(limits=SandboxLimits(timeout_seconds=2))
    yield t
    t.close()


@needs_sandbox
def test_cwd_variables_and_functions_persist(tool: ShellTool):
    assert tool.invoke({"command": "mkdir -p /root/w && cd /root/w && X=42 && f() { echo f$1; }"}) == (
        "The output of the OS is empty."
    )
    assert tool.invoke({"command": "pwd; echo $X; f 7"}) == "The output of the OS:\n\n/root/w\n42\nf7"


@needs_sandbox
def test_background_job_keeps_running_between_calls(tool: ShellTool):
    tool.invoke({"command": "(for i in 1 2 3 4 5 6 7 8; do echo $i >> /root/bg; sleep 0.1; done) &"})

    def lines() -> str:
        return tool.invoke({"command": "wc -l < /root/bg"})

    eventually(lambda: lines() == "The output of the OS:\n\n8", what="the job's 8 lines")


@needs_sandbox
def test_home_is_root_and_home_is_writable(tool: ShellTool):
    out = tool.invoke({"command": "echo $HOME; pwd; touch /home/x /root/y && echo ok; id -u"})
    assert out == "The output of the OS:\n\n/root\n/root\nok\n1000"


@needs_sandbox
def test_stderr_is_merged_and_exit_status_kept():
    with ShellSession() as s:
        result = s.run("echo out; echo err >&2; exit_with() { return $1; }; exit_with 3")
        assert (result.output, result.exit_code) == ("out\nerr\n", 3)
        syntax = s.run("if then")
        assert syntax.exit_code == 2 and "syntax error" in syntax.output
        assert s.run("echo still here").output == "still here\n"  # a syntax error does not end the shell


@needs_sandbox
def test_commands_that_read_stdin_get_eof_instead_of_hanging(tool: ShellTool):
    # A hang would run into the 2 s timeout and say so instead of "done".
    assert tool.invoke({"command": "cat; read x; echo done"}) == "The output of the OS:\n\ndone"


@needs_sandbox
def test_empty_output_is_framed_like_agentbench(tool: ShellTool):
    assert tool.invoke({"command": "true"}) == "The output of the OS is empty."


@needs_sandbox
def test_long_output_is_truncated_like_agentbench(tool: ShellTool):
    out = tool.invoke({"command": "printf 'a%.0s' $(seq 1000)"})
    assert out == "The output of the OS:\n\n" + "a" * 780 + OS_TRUNCATED


@needs_sandbox
def test_timeout_is_reported_and_the_next_call_gets_a_fresh_shell(tool: ShellTool):
    tool.invoke({"command": "cd /tmp; Y=1; echo kept > /root/file; sleep 300 &"})
    started = time.monotonic()
    out = tool.invoke({"command": "echo before; sleep 30"})
    assert time.monotonic() - started < 20  # stopped at 2 s, not after the 30 s sleep
    assert out.startswith("The output of the OS:\n\nbefore\n[the command was stopped after 2 s;")
    assert "the next command starts a new shell" in out
    session = tool.shell()
    assert not session.alive and processes_of(session.uid) == []  # background sleep killed too
    after = tool.invoke({"command": "pwd; echo Y=$Y; cat /root/file"})
    assert after == "The output of the OS:\n\n/root\nY=\nkept"  # files kept, shell state gone
    assert session.restarts == 1


@needs_sandbox
def test_exit_is_reported_and_the_next_call_restarts(tool: ShellTool):
    out = tool.invoke({"command": "echo bye; exit 4"})
    assert out.startswith("The output of the OS:\n\nbye\n[the shell exited (status 4)")
    assert tool.invoke({"command": "echo back"}) == "The output of the OS:\n\nback"


@needs_sandbox
def test_output_is_capped_while_reading():
    with ShellSession(SandboxLimits(output_bytes=4096)) as s:
        result = s.run("head -c 5000000 /dev/zero | tr '\\0' x; echo; echo tail")
        assert result.truncated and result.output_total == 5_000_006
        assert len(result.output) == 4096 and result.note.startswith("[output cut")
        assert s.run("echo fine").output == "fine\n"  # the sentinel was still found


@needs_sandbox
def test_misuse_comes_back_as_error_text(tool: ShellTool):
    assert tool.invoke({"command": "   "}).startswith("Error: the command is empty")
    assert tool.invoke({"command": "echo a\0b"}).startswith("Error: the command contains a NUL byte")
    assert tool.invoke({"command": "#" * 70_000}).startswith("Error: the command is longer than")


@needs_sandbox
def test_closed_session():
    s = ShellSession()
    s.run("true")
    s.close()
    with pytest.raises(ShellClosedError):
        s.run("true")
    assert ShellTool(session=s).invoke({"command": "true"}).startswith("Error: the shell session is closed")
    assert not s.root_dir.exists()


@needs_sandbox
def test_a_given_session_is_shared_and_not_closed_by_the_tool():
    with ShellSession() as s:
        a, b = ShellTool(session=s), ShellTool(session=s)
        a.invoke({"command": "Z=shared"})
        assert b.invoke({"command": "echo $Z"}) == "The output of the OS:\n\nshared"
        a.close()
        assert s.run("echo $Z").output == "shared\n"


@needs_sandbox
def test_run_isolated_sees_binds_read_only_and_nothing_of_a_session():
    folder = Path(tempfile.mkdtemp(prefix="agentlm-bind-"))
    try:
        os.chmod(folder, 0o777)  # bwrap runs as the sandbox uid: the source must be reachable by it
        (folder / "data.txt").write_text("hello\n")
        result = run_isolated(
            "cat /data/data.txt; echo x > /data/new; ls /root | wc -l",
            binds=[Bind(source=folder, target="/data")],
        )
        assert result.output.startswith("hello\n") and "Read-only file system" in result.output
        assert result.output.endswith("0\n") and not (folder / "new").exists()
    finally:
        shutil.rmtree(folder)
    assert run_isolated(["python3", "-c", "import sys; sys.exit(5)"]).exit_code == 5
    slow = run_isolated("sleep 20", timeout=0.5)
    assert slow.timed_out and slow.exit_code is None


@needs_sandbox
def test_session_run_isolated_is_fresh_but_shares_the_scratch_dirs():
    with ShellSession() as s:
        s.run("cd /tmp && V=1 && echo agent > /home/note")
        out = s.run_isolated("pwd; echo V=$V; cat /home/note; echo iso > /root/iso")
        assert out.output == "/root\nV=\nagent\n" and out.exit_code == 0
        assert s.run("cat /root/iso").output == "iso\n"
        assert "Read-only" in s.run_isolated("touch /root/ro", writable=False).output


def test_missing_bwrap_raises_with_how_to_fix_it():
    settings = ShellSettings(bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailableError) as raised:
        check_sandbox(settings)
    message = str(raised.value)
    assert "/nonexistent/bwrap" in message and "apt-get install bubblewrap" in message
    assert "AGENTLM_SHELL_UNSAFE_LOCAL=1" in message and "seccomp=unconfined" in message
    with ShellSession(settings=settings, unsafe_local=False) as s, pytest.raises(SandboxUnavailableError):
        s.run("true")
    tool = ShellTool(session=ShellSession(settings=settings, unsafe_local=False))
    out = tool.invoke({"command": "echo hi"})
    assert out.startswith("Error: the shell sandbox needs bubblewrap")  # text, never an exception
    tool.session.close()


def test_bwrap_that_cannot_make_namespaces_is_reported():
    folder = Path(tempfile.mkdtemp(prefix="agentlm-fake-bwrap-"))
    try:
        os.chmod(folder, 0o755)  # the sandbox uid runs it
        fake = folder / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        with pytest.raises(SandboxUnavailableError, match="No permissions to create new namespace.*sysctl"):
            check_sandbox(ShellSettings(bwrap=str(fake)))
    finally:
        shutil.rmtree(folder)


def test_unsafe_local_only_when_asked(monkeypatch, caplog):
    monkeypatch.delenv("AGENTLM_SHELL_UNSAFE_LOCAL", raising=False)
    missing = ShellSettings(bwrap="/nonexistent/bwrap")
    with ShellSession(settings=missing) as s, pytest.raises(SandboxUnavailableError):
        s.run("true")  # no silent fallback to an unsandboxed shell
    with caplog.at_level(logging.WARNING), ShellSession(settings=missing, unsafe_local=True) as s:
        result = s.run("pwd; ulimit -v; echo $HOME")
        assert result.output == f"{s.root_dir}\n{1024 * 1024}\n{s.root_dir}\n"  # plain bash, rlimits kept
    assert "UNSAFE" in caplog.text
    monkeypatch.setenv("AGENTLM_SHELL_UNSAFE_LOCAL", "1")
    with ShellSession(settings=ShellSettings(bwrap="/nonexistent/bwrap")) as s:
        assert s.unsafe_local and s.run("echo $HOME").output == f"{s.root_dir}\n"
        assert s.run("sleep 10", timeout=0.5).timed_out

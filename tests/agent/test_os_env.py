"""OSEnvironment on AgentBench's os_interaction dev set, read from the shared folder (not copied here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentlm.agent.envs.base import TaskFileError
from agentlm.agent.envs.os import (
    OSEnvironment,
    OSTaskSetupError,
    integer_match,
    size_match,
    string_match,
)
from agentlm.agent.protocols import os_opening, os_task
from agentlm.agent.tools.shell import SandboxUnavailableError, ShellTool, check_sandbox

DEV = Path("/work/shared/agentbench/os_dev.json")

try:
    check_sandbox()
    _unavailable = None
except SandboxUnavailableError as e:
    _unavailable = str(e)

needs_sandbox = pytest.mark.skipif(_unavailable is not None, reason=f"no bubblewrap sandbox: {_unavailable}")
needs_dev = pytest.mark.skipif(not DEV.is_file(), reason=f"{DEV} is not on this machine")

# What cannot run in an unprivileged, read-only sandbox with only the JSON file, and why.
UNSUPPORTED = {
    3: "example/0.sh",  # the calc tasks' check and example scripts are files AgentBench ships
    5: "example/0.sh",
    18: "useradd",
    19: "useradd",
    20: "useradd",
    24: "useradd",  # useradd, chown and su - jack
    25: "init/stock-log.sh",  # a missing file, which also writes /usr/stock.log
}
ALL = range(26)
SUPPORTED = [i for i in ALL if i not in UNSUPPORTED]


@pytest.fixture(scope="module")
def env() -> OSEnvironment:
    return OSEnvironment()


@pytest.fixture(scope="module")
def dev(env: OSEnvironment):
    return env.load(DEV)


@needs_dev
def test_loads_the_dev_set_with_agentbench_ids(dev):
    assert len(dev) == 26
    assert [t.id for t in dev] == [f"os_dev-{i:05d}" for i in ALL]
    assert dev[6].description == "How many hidden files are in /home? (not including subdirectories)"


@needs_dev
def test_unsupported_tasks_are_listed_with_reasons(dev):
    unsupported = {i: t.unsupported for i, t in enumerate(dev) if t.unsupported}
    assert sorted(unsupported) == sorted(UNSUPPORTED)
    assert len(unsupported) == 7
    for i, needle in UNSUPPORTED.items():
        assert needle in unsupported[i], unsupported[i]
    assert "needs root" in unsupported[18] and "not shipped with the task file" in unsupported[25]


@needs_dev
@needs_sandbox
def test_verify_skips_unsupported_tasks_with_their_reason(env, dev):
    (task, reward, note), *_ = env.verify([dev[18]])
    assert task is dev[18] and reward is None and "useradd" in note
    with pytest.raises(ValueError, match="cannot run here"):
        env.episode(dev[18])


def _wrong(answer: str) -> str:
    return str(int(answer) + 1) if answer.strip().lstrip("-").isdigit() else answer + "-wrong"


@needs_dev
@needs_sandbox
@pytest.mark.parametrize("index", SUPPORTED)
def test_gold_policy_scores_1_and_a_wrong_answer_0(env, dev, index: int):
    with env.episode(dev[index]) as ep:
        gold = ep.reference_answer()
        assert gold, f"task {index} gave no reference answer"
        assert ep.reward(gold) == 1.0
        assert ep.reward(_wrong(gold)) == 0.0
        assert ep.reward("") == 0.0
        assert ep.reward(None) == 0.0


@needs_dev
@needs_sandbox
def test_setup_is_agentbench_os(env, dev):
    with env.episode(dev[7]) as ep:
        setup = ep.setup()
        assert setup.protocol == "os" and setup.max_rounds == 8 and setup.name == "os_dev-00007"
        assert setup.prompt == os_opening() and setup.task == os_task(dev[7].description)
        tool = setup.tools["bash"]
        assert isinstance(tool, ShellTool)
        # init ran before the agent's first turn, in the agent's /root
        assert tool.invoke({"command": "ls -a /root | sort | tr '\\n' ' '"}) == (
            "The output of the OS:\n\n. .. .k .tm12p .tmp2 .u f tmp "
        )


@needs_dev
@needs_sandbox
def test_start_script_runs_a_background_writer_in_the_agents_shell(env, dev):
    with env.episode(dev[0]) as ep:  # writes 'succeed' into /root/log every second
        log = ep.session.root_dir / "log"
        time.sleep(0.3)
        first = log.read_text().count("succeed")
        time.sleep(2.1)
        grown = log.read_text().count("succeed") - first
        assert 2 <= grown <= 3
        out = ep.setup().tools["bash"].invoke({"command": "ps -eo args | grep -c '^python3 -c import time'"})
        assert out == "The output of the OS:\n\n1"


@pytest.mark.slow
@needs_dev
@needs_sandbox
def test_start_writer_of_task_4_writes_every_3_seconds(env, dev):
    with env.episode(dev[4]) as ep:
        log = ep.session.root_dir / "log"
        time.sleep(0.5)
        first = log.read_text().count("succeed")
        time.sleep(6.2)
        assert log.read_text().count("succeed") - first == 2


@needs_dev
@needs_sandbox
def test_the_check_runs_in_a_fresh_sandbox_the_agent_cannot_tamper_with(env, dev):
    with env.episode(dev[6]) as ep:  # how many hidden files in /home: the example counts 8
        tool = ep.setup().tools["bash"]
        tool.invoke({"command": "touch /home/.a /home/.b; rm /home/.tmp; mkdir -p /root/bin"})
        assert tool.invoke({"command": 'ls -a /home | grep "^\\." | wc -l'}) == "The output of the OS:\n\n9"
        assert ep.reward("9") == 0.0  # the tampered world's count
        assert ep.reward("8") == 1.0  # the task's own world's count
        assert ep.reward(" 8\n") == 1.0  # integer-match ignores surrounding whitespace


def _write(tmp_path: Path, records: list, name: str = "tasks.json") -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path.write_text(json.dumps(records))
    return path


GOOD = {"description": "say hi", "evaluation": {"match": "hi"}}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"evaluation": {"match": "x"}}, "'description' is missing"),
        ({"description": "d"}, "'evaluation' is missing"),
        ({"description": "d", "evaluation": {}}, "needs 'match' or 'check'"),
        ({"description": "d", "evaluation": {"match": 3}}, "evaluation.match must be"),
        ({"description": "d", "evaluation": {"match": {"regex": "("}}}, "not a valid regex"),
        ({"description": "d", "evaluation": {"check": [None]}}, "no 'example'"),
        ({"description": "d", "evaluation": {"check": []}}, "empty list"),
        (
            {"description": "d", "create": {"init": {"language": "bash"}}, "evaluation": GOOD["evaluation"]},
            "create.init[0] needs 'code' or 'file'",
        ),
        ({"description": "d", "start": 5, "evaluation": GOOD["evaluation"]}, "start must be a string"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_malformed_task_names_file_and_index(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(TaskFileError) as raised:
        OSEnvironment().load(path)
    text = str(raised.value)
    assert str(path) in text and "task 2:" in text and message in text


def test_unreadable_files(tmp_path):
    with pytest.raises(TaskFileError, match="cannot read"):
        OSEnvironment().load(tmp_path / "missing.json")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(TaskFileError, match=r"line 2 \(task 1\) is not JSON"):
        OSEnvironment().load(broken)


def test_jsonl_and_single_object_files(tmp_path):
    tasks = OSEnvironment().load(_write(tmp_path, [GOOD, GOOD], "set.jsonl"))
    assert [t.id for t in tasks] == ["set-00000", "set-00001"]
    single = tmp_path / "one.json"
    single.write_text(json.dumps(GOOD))
    assert [t.id for t in OSEnvironment().load(single)] == ["one-00000"]


@needs_sandbox
def test_match_variants_regex_and_no_strip(tmp_path):
    records = [
        {"description": "r", "evaluation": {"match": {"regex": r"^\d+ files?$"}}},
        {"description": "s", "evaluation": {"match": {"answer": " x ", "strip": False}}},
        {"description": "t", "evaluation": {"match": "x"}},
    ]
    env = OSEnvironment()
    regex, exact, stripped = env.load(_write(tmp_path, records))
    with env.episode(regex) as ep:
        assert ep.reward("12 files") == 1.0 and ep.reward("twelve") == 0.0
        assert ep.reference_answer() is None  # a regex has no gold text and the task no example
    with env.episode(exact) as ep:
        assert ep.reward(" x ") == 1.0 and ep.reward("x") == 0.0
    with env.episode(stripped) as ep:
        assert ep.reward("  x\n") == 1.0


@needs_sandbox
def test_python_init_and_an_inline_check_script(tmp_path):
    record = {
        "description": "what is in /root/f?",
        "create": {
            "init": [{"language": "python", "code": "open('/root/f', 'w').write('abc')"}, "echo d >> /root/f"]
        },
        "evaluation": {
            "check": [
                None,
                {
                    "language": "python",
                    "code": "import sys; sys.exit(sys.argv[1].strip() != sys.argv[2].strip())",
                },
                {"language": "python", "file": "check/string-match.py"},
            ],
            "example": {"code": "cat /root/f | tr -d '\\n'; echo"},
        },
    }
    env = OSEnvironment()
    (task,) = env.load(_write(tmp_path, [record]))
    assert task.unsupported is None
    with env.episode(task) as ep:
        assert ep.reference_answer() == "abcd"
        assert ep.reward("abcd") == 1.0 and ep.reward("abc") == 0.0


@needs_sandbox
def test_init_that_fails_for_lack_of_root_raises(tmp_path):
    record = {
        "description": "d",
        "create": {"init": "f=/usr/stock.log; echo x > $f"},
        "evaluation": {"match": "x"},
    }
    env = OSEnvironment()
    (task,) = env.load(_write(tmp_path, [record]))
    assert task.unsupported is None  # the target hides behind a variable: only running it tells
    with pytest.raises(OSTaskSetupError, match="init script 0 failed.*cannot run here"):
        env.episode(task)


@pytest.mark.parametrize(
    "code",
    [
        "echo x > /etc/motd",
        "mkdir -p /opt/app",
        "sudo ls",
        "chown jack test",
        "python3 -c \"open('/usr/x','w')\"",
    ],
)
def test_root_needing_init_is_unsupported(tmp_path, code):
    record = {"description": "d", "create": {"init": code}, "evaluation": {"match": "x"}}
    (task,) = OSEnvironment().load(_write(tmp_path, [record]))
    assert task.unsupported and task.unsupported.startswith("the init script 0 ")


def test_writable_init_is_supported(tmp_path):
    code = "mkdir -p /home/a && echo 1 > /root/x && cp /etc/hostname /tmp/h && ls /usr > /root/l"
    record = {"description": "d", "create": {"init": code}, "evaluation": {"match": "x"}}
    (task,) = OSEnvironment().load(_write(tmp_path, [record]))
    assert task.unsupported is None


@pytest.mark.parametrize(
    ("answer", "expected", "ok"),
    [
        ("3", "3\n", True),
        (" 3 ", "3", True),
        ("03", "3", True),
        ("3 files", "3", False),
        ("4", "3", False),
        ("", "3", False),
    ],
)
def test_integer_match(answer, expected, ok):
    assert integer_match(answer, expected) is ok


def test_string_match():
    assert string_match("installed", "installed\n") and string_match("a\r\nb", "a\nb")
    assert not string_match("not-yet", "installed")


@pytest.mark.parametrize(
    ("answer", "expected", "ok"),
    [
        ("4.0K", "4.0K\n", True),
        ("4K", "4.0K", True),
        ("4096", "4.0K", True),
        ("4KB", "4.0K", True),
        ("8.0K", "8.0K", True),
        ("4100", "4.1K", True),  # du -h rounds up: 4100 bytes print as 4.1K
        ("4.1K", "4.0K", False),
        ("12K", "8.0K", False),
        ("1.5M", "1.5M", True),
        ("1.5G", "1.5M", False),
        ("big", "4.0K", False),
    ],
)
def test_size_match(answer, expected, ok):
    assert size_match(answer, expected) is ok

"""OSEnvironment on AgentBench's os_interaction dev set, read from the shared folder (not copied here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tasksystems import needs_system
from waiting import eventually

from agentlm.agent.envs.base import TaskFileError
from agentlm.agent.envs.os import (
    OSEnvironment,
    OSTaskSetupError,
    default_scripts,
    image_flavour,
    integer_match,
    size_match,
    string_match,
)
from agentlm.agent.protocols import os_opening, os_task
from agentlm.agent.tools.osimage import FLAVOURS
from agentlm.agent.tools.sandbox import SandboxLimits
from agentlm.agent.tools.shell import ShellTool

SHARED = Path(__file__).resolve().parents[3] / "shared" / "agentbench"
DEV = SHARED / "os_dev.json"
needs_dev = pytest.mark.skipif(not DEV.is_file(), reason=f"{DEV} is not on this machine")
# The dev tasks whose scripts are files in AgentBench's scripts folder (os_scripts/dev).
SCRIPT_FILES = {3: "example/0.sh", 5: "example/0.sh", 25: "init/stock-log.sh"}
ALL = range(26)
SYSTEM_CHECKS = {3, 5}  # "make a calc command": the check runs it, whatever the answer


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
def test_scripts_are_found_beside_the_task_file_as_agentbench_lays_them_out(dev, tmp_path):
    assert default_scripts(DEV) == SHARED / "os_scripts" / "dev"
    assert default_scripts(SHARED / "os_sets" / "os_7_bootstrap.json") == SHARED / "os_scripts" / "7"
    checkout = tmp_path / "data" / "os_interaction"
    (checkout / "data" / "4").mkdir(parents=True)
    (checkout / "scripts" / "4").mkdir(parents=True)
    assert default_scripts(checkout / "data" / "4" / "q.json") == checkout / "scripts" / "4"
    assert default_scripts(tmp_path / "mine.json") is None
    assert not any(t.unsupported for t in dev)  # every script the dev set names is there


@needs_dev
def test_tasks_whose_script_files_are_missing_say_which_and_how(tmp_path):
    tasks = OSEnvironment(scripts=tmp_path).load(DEV)  # a folder without AgentBench's scripts
    unsupported = {i: t.unsupported for i, t in enumerate(tasks) if t.unsupported}
    assert sorted(unsupported) == sorted(SCRIPT_FILES)
    for i, file in SCRIPT_FILES.items():
        assert file in unsupported[i] and "--scripts" in unsupported[i]
    (task, reward, note), *_ = OSEnvironment(scripts=tmp_path).verify([tasks[25]])
    assert task is tasks[25] and reward is None and "init/stock-log.sh" in note
    with pytest.raises(ValueError, match="cannot run here"):
        OSEnvironment(scripts=tmp_path).episode(tasks[25])


def _wrong(answer: str) -> str:
    return str(int(answer) + 1) if answer.strip().lstrip("-").isdigit() else answer + "-wrong"


@needs_dev
@needs_system
@pytest.mark.parametrize("index", ALL)
def test_gold_policy_scores_1_and_a_wrong_answer_0(env, dev, index: int):
    with env.episode(dev[index]) as ep:
        gold = ep.reference_answer()
        if index in SYSTEM_CHECKS:  # the check looks at what the example did, not at the answer
            assert gold == "" and ep.reward(gold) == 1.0
            with env.episode(dev[index]) as untouched:
                assert untouched.reward("") == 0.0
            return
        assert gold, f"task {index} gave no reference answer"
        assert ep.reward(gold) == 1.0
        assert ep.reward(_wrong(gold)) == 0.0
        assert ep.reward("") == 0.0
        assert ep.reward(None) == 0.0


@needs_dev
@needs_system
def test_setup_is_agentbench_os(env, dev):
    with env.episode(dev[7]) as ep:
        setup = ep.setup()
        assert setup.protocol == "os" and setup.max_rounds == 8 and setup.name == "os_dev-00007"
        assert setup.prompt == os_opening() and setup.task == os_task(dev[7].description)
        tool = setup.tools["bash"]
        assert isinstance(tool, ShellTool)
        # init ran before the agent's first turn, as root, in the task's own system
        assert (
            tool.invoke({"command": "cat /root/f; id -u"}) == "The output of the OS:\n\nabcdabcdabcdabcd\n0"
        )


def writes_apart(ep) -> float:
    """Seconds per write of a background writer that appends 'succeed' to /root/log: timed over
    two writes, from the first one seen. A loaded machine makes writes late, never early."""

    def count() -> int:
        return int(ep.session.run_isolated("grep -so succeed /root/log | wc -l").output)

    start = count()
    eventually(lambda: count() > start, what="the writer's next write")
    seen, since = count(), time.monotonic()
    eventually(lambda: count() >= seen + 2, what="two more writes")
    return (time.monotonic() - since) / 2


@needs_dev
@needs_system
def test_start_script_runs_a_background_writer_in_the_agents_shell(env, dev):
    with env.episode(dev[0]) as ep:  # writes 'succeed' into /root/log every second
        assert writes_apart(ep) >= 0.8
        out = ep.setup().tools["bash"].invoke({"command": "ps -eo args | grep -c '^python3 -c import time'"})
        assert out == "The output of the OS:\n\n1"


@pytest.mark.slow
@needs_dev
@needs_system
def test_start_writer_of_task_4_writes_every_3_seconds(env, dev):
    with env.episode(dev[4]) as ep:
        assert writes_apart(ep) >= 2.5


@needs_dev
@needs_system
def test_the_check_runs_in_the_agents_system_as_agentbench_ran_it(env, dev):
    with env.episode(dev[6]) as ep:  # how many hidden files in /home: the example counts them
        tool = ep.setup().tools["bash"]
        assert tool.invoke({"command": 'ls -a /home | grep "^\\." | wc -l'}) == "The output of the OS:\n\n8"
        tool.invoke({"command": "touch /home/.a /home/.b; rm /home/.tmp"})
        assert ep.reward("9") == 1.0  # the system as the agent left it, as AgentBench's check saw it
        assert ep.reward("8") == 0.0
        assert ep.reward(" 9\n") == 1.0  # integer-match ignores surrounding whitespace


@needs_system
def test_each_task_has_its_own_system_and_the_host_is_untouched(tmp_path):
    record = {
        "description": "d",
        "create": {"init": "useradd -m jack && echo x > /etc/agentlm-test && chown jack /etc/agentlm-test"},
        "evaluation": {"match": "x"},
    }
    env = OSEnvironment()
    (task,) = env.load(_write(tmp_path, [record]))
    with env.episode(task) as first:
        assert first.session.run("stat -c %U /etc/agentlm-test; id -u jack").output == "jack\n1000\n"
        first.session.run("echo y >> /usr/bin/agentlm-y")
        with env.episode(task) as second:  # the same task, at the same time, in a system of its own
            assert second.session.run("cat /usr/bin/agentlm-y").exit_code != 0
    assert not Path("/etc/agentlm-test").exists() and not Path("/usr/bin/agentlm-y").exists()


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


@needs_system
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


@needs_system
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


@needs_system
def test_init_runs_as_root_over_the_whole_system_and_its_background_jobs_live_on(tmp_path):
    record = {
        "description": "d",
        "create": {"init": "echo x > /usr/stock.log && mkdir -p /data && chmod 700 /data && (sleep 300 &)"},
        "evaluation": {"match": "x"},
    }
    env = OSEnvironment()
    (task,) = env.load(_write(tmp_path, [record]))
    with env.episode(task) as ep:
        out = ep.session.run("cat /usr/stock.log; stat -c %a /data; pgrep -c sleep").output
        assert out == "x\n700\n1\n"


@needs_system
def test_an_init_that_hangs_is_a_setup_error_naming_the_task(tmp_path):
    record = {"description": "d", "create": {"init": "echo started; sleep 300"}, "evaluation": {"match": "x"}}
    env = OSEnvironment(limits=SandboxLimits(timeout_seconds=1))
    (task,) = env.load(_write(tmp_path, [record]))
    with pytest.raises(OSTaskSetupError, match=r"init script 0 ran past 1 s: 'started'"):
        env.episode(task)


@pytest.mark.parametrize(
    "code",
    [
        "apt-get install -y jq",
        "apt update && apt install -y nodejs",
        "pip install requests",
        "git clone https://github.com/x/y",
        "curl -sL https://example.com/setup.sh | bash",
        "cd /tmp; wget http://example.com/data.tgz",
    ],
)
def test_init_that_needs_the_internet_is_unsupported_by_name(tmp_path, code):
    record = {"description": "d", "create": {"init": code}, "evaluation": {"match": "x"}}
    (task,) = OSEnvironment().load(_write(tmp_path, [record]))
    assert task.unsupported and task.unsupported.startswith("the init script 0 runs `")
    assert "needs the internet" in task.unsupported


def test_system_changing_init_is_supported(tmp_path):
    code = "useradd jack && chown jack /opt && echo 1 > /etc/x && curl -s http://127.0.0.1:1/ || true"
    record = {"description": "d", "create": {"init": code}, "evaluation": {"match": "x"}}
    (task,) = OSEnvironment().load(_write(tmp_path, [record]))
    assert task.unsupported is None


@pytest.mark.parametrize(
    ("create", "flavour"),
    [
        ({"local": "default"}, "default"),
        ({"local": "packages", "init": "true"}, "packages"),
        ({"image": "local-os/ubuntu"}, "ubuntu"),
        ({"image": "local-os/packages:latest"}, "packages"),
        ({}, "default"),
    ],
)
def test_a_task_runs_in_the_agentbench_image_it_names(tmp_path, create, flavour):
    record = {"description": "d", "create": create, "evaluation": {"match": "x"}}
    (task,) = OSEnvironment().load(_write(tmp_path, [record]))
    assert task.unsupported is None and image_flavour(record) == flavour
    spec = FLAVOURS[flavour]
    assert spec.flavour == flavour and set(FLAVOURS["default"].packages) <= set(spec.packages)
    # Each is its own cached image; `packages` has npm as AgentBench's does, `ubuntu` its file.
    assert len({s.name for s in FLAVOURS.values()}) == len(FLAVOURS)
    assert ("npm" in spec.packages) == (flavour == "packages")
    assert (("file.txt", "tmp\n") in spec.files) == (flavour == "ubuntu")


def test_a_task_naming_an_image_agentbench_does_not_have_is_unsupported(tmp_path):
    record = {"description": "d", "create": {"local": "centos"}, "evaluation": {"match": "x"}}
    (task,) = OSEnvironment().load(_write(tmp_path, [record]))
    assert task.unsupported == (
        "needs the image 'centos'; task systems are built like AgentBench's default, packages, ubuntu images"
    )


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

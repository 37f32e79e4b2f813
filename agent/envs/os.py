"""AgentBench os_interaction as an environment: one sandboxed bash per task, scored like AgentBench.

A task file is a JSON list (or one JSON object, or JSONL) of AgentBench v0.2 records
(``OSInteraction._load_configs``): ``description``; ``create.init`` (bash or python, run before the
agent starts); ``start`` (bash run in the agent's own shell first, e.g. a background writer);
``evaluation`` with ``match`` (a string compared after strip, ``{"answer", "strip"}`` or
``{"regex"}``) or ``check`` (scripts run in order with ``[answer, outputs of the earlier
scripts...]``; ``null`` means the task's ``example`` script; the task passes when all exit 0).

Where AgentBench used a root shell in a Docker container, each episode here gets a
``ShellSession``: an unprivileged bash in a bubblewrap sandbox with a writable ``/root`` (the
working directory) and ``/home``. Differences, on purpose:

- Checks never run where the agent acted. ``reward`` builds a fresh world (new sandbox, the same
  init and start) and runs the example script there; the standard checkers (integer-match,
  string-match, size-match) run natively in Python on the host. AgentBench ran both in the agent's
  container, which the agent could have changed.
- Tasks that need root or files this repository does not have are marked ``unsupported`` at load
  time with the reason: init code that manages users or ownership (useradd, chown, su...), writes
  outside /root, /home and /tmp, or names a script file (``init/*.sh``, ``check/0.sh``...) that is
  not shipped with the task file (pass ``script_dir`` to use AgentBench's script folder).
- size-match compares sizes as byte counts (``4.0K`` = ``4K`` = ``4096``, and a byte count that
  ``du -h`` would print as the expected text matches it); AgentBench's script only took integers.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentlm.agent.envs.base import Environment, EnvTask, Episode, Setup, TaskFileError
from agentlm.agent.protocols import os_opening, os_task
from agentlm.agent.tools.shell import CommandResult, SandboxLimits, ShellSession, ShellSettings, ShellTool

log = logging.getLogger(__name__)

__all__ = [
    "NATIVE_CHECKS",
    "OSEnvironment",
    "OSEpisode",
    "OSTask",
    "OSTaskSetupError",
    "Script",
    "integer_match",
    "parse_size",
    "size_match",
    "string_match",
]

MAX_ROUNDS = 8  # AgentBench os_interaction's round limit
Language = Literal["bash", "python"]


class OSTaskSetupError(RuntimeError):
    """A task's init or start script could not run in the sandbox."""


# --- the standard checkers, natively ----------------------------------------------------------------


def integer_match(answer: str, expected: str) -> bool:
    """check/integer-match.py: int(argv[1]) == int(argv[2]) (int() ignores surrounding whitespace)."""
    try:
        return int(answer) == int(expected)
    except ValueError:
        return False


def string_match(answer: str, expected: str) -> bool:
    """check/string-match.py: equal after normalizing newlines and stripping."""

    def norm(s: str) -> str:
        return s.replace("\r\n", "\n").replace("\r", "\n").strip()

    return norm(answer) == norm(expected)


_UNITS = {"": 1, "B": 1, "BYTE": 1, "BYTES": 1}
for _power, _letter in enumerate("KMGTPE", start=1):
    for _suffix in (_letter, _letter + "B", _letter + "IB"):
        _UNITS[_suffix] = 1024**_power
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> float | None:
    """'4.0K', '4K', '4KB', '4KiB', '4096' -> bytes (powers of 1024, as du -h prints); None if not a size."""
    found = _SIZE.match(text)
    if not found or found.group(2).upper() not in _UNITS:
        return None
    return float(found.group(1)) * _UNITS[found.group(2).upper()]


def du_human(size: float) -> str:
    """A byte count as `du -h` prints it: powers of 1024, rounded up, one decimal below 10."""
    if size < 1024:
        return str(math.ceil(size))
    units, value, i = "KMGTPE", size / 1024, 0
    while math.ceil(value) >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    tenths = math.ceil(value * 10) / 10
    return f"{tenths:.1f}{units[i]}" if tenths < 10 else f"{math.ceil(value)}{units[i]}"


def size_match(answer: str, expected: str) -> bool:
    """check/size-match.py, as byte counts: 4.0K == 4K == 4096; a byte count du -h shows as `expected` matches."""
    a, e = parse_size(answer), parse_size(expected)
    if a is None or e is None:
        return False
    return a == e or du_human(a) == du_human(e)


NATIVE_CHECKS: dict[str, Callable[[str, str], bool]] = {
    "integer-match.py": integer_match,
    "string-match.py": string_match,
    "size-match.py": size_match,
}


# --- reading task files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    language: str
    code: str | None  # None when the file it names is not available
    file: str | None = None

    def argv(self, *params: str) -> list[str]:
        """How AgentBench's execute_independent ran it."""
        assert self.code is not None
        if self.language == "python":
            return ["python3", "-c", self.code, *params]
        return ["bash", "-c", self.code, *(["--", *params] if params else [])]


@dataclass(frozen=True)
class OSTask:
    """A task record, read and validated."""

    init: tuple[Script, ...]
    start: Script | None
    match: dict[str, Any] | None  # {"answer": str, "strip": bool} or {"regex": str, ...}
    check: tuple[Script | str | None, ...]  # None: the example; str: a native checker's file name
    example: Script | None


# Commands that need root (or a real login system) inside the box.
_ROOT_COMMANDS = re.compile(
    r"(?:^|[\s;&|(`])(useradd|userdel|usermod|adduser|deluser|groupadd|groupdel|groupmod|addgroup|gpasswd|"
    r"chpasswd|passwd|chown|chgrp|su|sudo|visudo|apt|apt-get|dpkg|mount|umount|systemctl|service|"
    r"setcap|chroot)(?=\s|$|;|&)",
    re.M,
)
_WRITE_TARGET = re.compile(r">>?\s*([^\s;&|<>()]+)")
_WRITE_COMMAND = re.compile(
    r"(?:^|[\s;&|(])(mkdir|touch|cp|mv|tee|ln|rm|install|chmod|truncate)\s+([^;&|\n]*)", re.M
)
_LAST_ARG_WRITTEN = {"cp", "mv", "ln", "install"}  # the others write every path they are given
_PY_WRITE = re.compile(r"open\(\s*['\"]([^'\"]+)['\"]\s*,\s*['\"][wax]")
_WRITABLE = ("/root", "/home", "/tmp", "/dev/null", "/dev/stdout", "/dev/stderr")


def _outside_writable(code: str) -> str | None:
    """The first absolute path outside /root, /home and /tmp that `code` writes to, if any."""
    paths = _WRITE_TARGET.findall(code) + _PY_WRITE.findall(code)
    for command, args in _WRITE_COMMAND.findall(code):
        operands = [a for a in args.split() if not a.startswith("-")]
        paths += operands[-1:] if command in _LAST_ARG_WRITTEN else operands
    for path in paths:
        path = path.strip("'\"")
        if path.startswith("/") and not any(path == w or path.startswith(w + "/") for w in _WRITABLE):
            return path
    return None


def _needs_root(script: Script) -> str | None:
    if script.code is None:
        return None
    found = _ROOT_COMMANDS.search(script.code)
    if found:
        return f"runs `{found.group(1)}`, which needs root, and the sandbox shell is an unprivileged user"
    target = _outside_writable(script.code)
    if target:
        return f"writes {target}, outside /root, /home and /tmp, the only writable places in the sandbox"
    return None


class _Reader:
    """Validates one record; every error names the file, the task index and the field."""

    def __init__(self, path: Path, index: int, script_dir: Path | None):
        self.path, self.index, self.script_dir = path, index, script_dir
        self.missing: list[str] = []

    def error(self, what: str) -> TaskFileError:
        return TaskFileError(f"{self.path}: task {self.index}: {what}")

    def script(self, obj: Any, where: str) -> Script:
        if isinstance(obj, str):
            return Script("bash", obj)
        if not isinstance(obj, dict):
            raise self.error(f"{where} must be a string of bash code or an object with 'code' or 'file'")
        language = obj.get("language", "bash")
        if not isinstance(language, str):
            raise self.error(f"{where}.language must be a string")
        if "code" in obj:
            if not isinstance(obj["code"], str):
                raise self.error(f"{where}.code must be a string")
            return Script(language, obj["code"])
        if "file" in obj:
            if not isinstance(obj["file"], str):
                raise self.error(f"{where}.file must be a string")
            file = obj["file"]
            if self.script_dir is not None and (self.script_dir / file).is_file():
                return Script(language, (self.script_dir / file).read_text(encoding="utf-8"), file)
            return Script(language, None, file)
        raise self.error(f"{where} needs 'code' or 'file' (AgentBench: 'Invalid Script Object')")

    def checker(self, obj: Any, where: str) -> Script | str | None:
        if obj is None:
            return None
        script = self.script(obj, where)
        if script.file is not None and Path(script.file).name in NATIVE_CHECKS:
            return Path(script.file).name  # built in: the file itself is not needed
        return script

    def read(self, record: Any) -> tuple[str, OSTask]:
        if not isinstance(record, dict):
            raise self.error(f"a task must be a JSON object, not {type(record).__name__}")
        description = record.get("description")
        if not isinstance(description, str) or not description.strip():
            raise self.error("'description' is missing or not a string")
        init: list[Script] = []
        create = record.get("create")
        # AgentBench only looks inside a dict; a list here (one dev task has one) holds no init.
        if isinstance(create, dict) and "init" in create:
            items = create["init"] if isinstance(create["init"], list) else [create["init"]]
            init = [self.script(s, f"create.init[{i}]") for i, s in enumerate(items) if s is not None]
        elif create is not None and not isinstance(create, dict | list):
            raise self.error("'create' must be an object")
        start = self.script(record["start"], "start") if "start" in record else None
        evaluation = record.get("evaluation")
        if not isinstance(evaluation, dict):
            raise self.error("'evaluation' is missing or not an object")
        match, check, example = None, (), None
        if "match" in evaluation:
            raw = evaluation["match"]
            if isinstance(raw, str):
                match = {"answer": raw, "strip": True}
            elif isinstance(raw, dict) and isinstance(raw.get("answer", raw.get("regex")), str):
                match = dict(raw)
                if "regex" in match and "answer" not in match:
                    try:
                        re.compile(match["regex"])
                    except re.error as e:
                        raise self.error(f"evaluation.match.regex is not a valid regex ({e})") from None
            else:
                raise self.error("evaluation.match must be a string or an object with 'answer' or 'regex'")
        elif "check" in evaluation:
            raw = evaluation["check"]
            items = raw if isinstance(raw, list) else [raw]
            if not items:
                raise self.error("evaluation.check is an empty list")
            check = tuple(self.checker(c, f"evaluation.check[{i}]") for i, c in enumerate(items))
            if "example" in evaluation:
                example = self.script(evaluation["example"], "evaluation.example")
            elif None in check:
                raise self.error(
                    "evaluation.check has null (run the example) but evaluation has no 'example'"
                )
        else:
            raise self.error("evaluation needs 'match' or 'check' (AgentBench: 'check or match must exist.')")
        return description, OSTask(tuple(init), start, match, check, example)


def _unsupported(raw: dict[str, Any], task: OSTask) -> str | None:
    create = raw.get("create")
    image = create.get("image") if isinstance(create, dict) else None
    if image and not str(image).endswith("/default"):
        return f"needs the Docker image {image!r}; the sandbox has this machine's system only"
    scripts: list[tuple[str, Script]] = [(f"init script {i}", s) for i, s in enumerate(task.init)]
    if task.start is not None:
        scripts.append(("start script", task.start))
    if task.example is not None:
        scripts.append(("example script", task.example))
    scripts += [(f"check script {i}", c) for i, c in enumerate(task.check) if isinstance(c, Script)]
    for where, script in scripts:
        if script.code is None:
            return (
                f"the {where} is the file {script.file!r}, which is not shipped with the task file "
                f"(built-in checks: {', '.join(NATIVE_CHECKS)}); pass AgentBench's scripts folder (agentlm tasks verify --script-dir)"
            )
        if script.language not in ("bash", "python"):
            return f"the {where} is in {script.language!r}; only bash and python scripts run here"
    for where, script in scripts[: len(task.init) + (task.start is not None)]:
        reason = _needs_root(script)
        if reason:
            return f"the {where} {reason}"
    return None


def _load_records(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaskFileError(f"{path}: cannot read the task file ({e.strerror})") from e
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as e:
                    raise TaskFileError(
                        f"{path}: line {n + 1} (task {len(records)}) is not JSON ({e})"
                    ) from e
        return records
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TaskFileError(f"{path}: not JSON ({e}); AgentBench os files are a JSON list or JSONL") from e
    return data if isinstance(data, list) else [data]


# --- the environment --------------------------------------------------------------------------------


class OSEnvironment(Environment):
    """AgentBench os_interaction tasks in a bubblewrap sandbox (never the unsafe local shell)."""

    name = "os"

    def __init__(
        self,
        script_dir: str | Path | None = None,
        limits: SandboxLimits | None = None,
        settings: ShellSettings | None = None,
    ):
        self.script_dir = Path(script_dir) if script_dir is not None else None
        self.limits = limits or SandboxLimits()
        self.settings = settings or ShellSettings()

    def load(self, path: str | Path) -> list[EnvTask]:
        path = Path(path)
        stem = path.name.removesuffix(".jsonl").removesuffix(".json")
        tasks = []
        for index, record in enumerate(_load_records(path)):
            description, parsed = _Reader(path, index, self.script_dir).read(record)
            tasks.append(
                EnvTask(
                    id=f"{stem}-{index:05d}",
                    description=description,
                    raw=record,
                    unsupported=_unsupported(record, parsed),
                )
            )
        return tasks

    def episode(self, task: EnvTask) -> OSEpisode:
        if task.unsupported:
            raise ValueError(f"task {task.id} cannot run here: {task.unsupported}")
        return OSEpisode(task, self)


class OSEpisode(Episode):
    """A fresh sandboxed shell with the task's init and start run; scored in a second fresh world."""

    def __init__(self, task: EnvTask, env: OSEnvironment):
        super().__init__(task)
        self.env = env
        self.spec = _Reader(Path(task.id), 0, env.script_dir).read(task.raw)[1]
        self.session = self._world()
        self.tool = ShellTool(session=self.session, limits=env.limits)

    def _world(self) -> ShellSession:
        """A new sandbox session with the task's init scripts run and its start script in the shell."""
        session = ShellSession(self.env.limits, settings=self.env.settings, unsafe_local=False)
        try:
            for n, script in enumerate(self.spec.init):
                # AgentBench ran init independently of the shell (docker exec) and ignored failures;
                # failures the sandbox causes (no root, read-only system) are made loud instead.
                result = session.run_isolated(script.argv())
                if result.exit_code != 0:
                    self._init_failed(n, result)
            if self.spec.start is not None:
                assert self.spec.start.code is not None
                if self.spec.start.language == "python":
                    session.run(" ".join(["python3", "-c", shlex.quote(self.spec.start.code)]))
                else:
                    session.run(self.spec.start.code)
        except BaseException:
            session.close()
            raise
        return session

    def _init_failed(self, n: int, result: CommandResult) -> None:
        output = result.output.strip()[-500:]
        if result.timed_out or re.search(
            r"Permission denied|Read-only file system|Operation not permitted|must be run as root|"
            r"only root|are not the super-user",
            output,
        ):
            raise OSTaskSetupError(
                f"task {self.task.id}: init script {n} failed in the sandbox "
                f"({'timed out' if result.timed_out else f'exit {result.exit_code}'}): {output!r}. "
                "Tasks that need root or write outside /root, /home and /tmp cannot run here."
            )
        log.warning("task %s: init script %d exited %s: %s", self.task.id, n, result.exit_code, output)

    def setup(self) -> Setup:
        return Setup(
            protocol="os",
            prompt=os_opening(),
            task=os_task(self.task.description),
            tools={"bash": self.tool},
            max_rounds=MAX_ROUNDS,
            name=self.task.id,
            metadata={"labels": self.task.raw.get("labels", [])},
        )

    def reward(self, answer: str | None) -> float:
        if answer is None:
            return 0.0
        match = self.spec.match
        if match is not None:
            if match.get("strip"):
                answer = answer.strip()
            if "answer" in match:
                return float(answer == match["answer"])
            return float(re.search(match["regex"], answer) is not None)
        return float(self._check(answer))

    def _check(self, answer: str) -> bool:
        """AgentBench's check chain, in a fresh world the agent never touched."""
        params = [str(answer)]
        with self._world() as fresh:
            for step in self.spec.check:
                if isinstance(step, str):
                    if len(params) < 2 or not NATIVE_CHECKS[step](params[0], params[1]):
                        return False
                    params.append("")
                    continue
                script = self.spec.example if step is None else step
                assert script is not None
                result = fresh.run_isolated(script.argv(*params))
                if result.exit_code != 0:
                    return False
                params.append(result.output)
        return True

    def reference_action(self) -> str | None:
        """The example script as bash (check tasks); match tasks ship only their answer."""
        example = self.spec.example
        if example is None or example.code is None:
            return None
        return example.code if example.language == "bash" else f"python3 -c {shlex.quote(example.code)}"

    def reference_answer(self) -> str | None:
        """The gold answer (match), or the example script's output in the agent's own shell (check)."""
        match = self.spec.match
        if match is not None and "answer" in match:
            return match["answer"]
        code = self.reference_action()
        return None if code is None else self.session.run(code).output.strip()

    def close(self) -> None:
        self.tool.close()
        self.session.close()

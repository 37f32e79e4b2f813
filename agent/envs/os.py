"""AgentBench os_interaction as an environment: one sandboxed bash per task, scored like AgentBench.

A task file is a JSON list (or one JSON object, or JSONL) of AgentBench v0.2 records
(``OSInteraction._load_configs``): ``description``; ``create.init`` (bash or python, run before the
agent starts); ``start`` (bash run in the agent's own shell first, e.g. a background writer);
``evaluation`` with ``match`` (a string compared after strip, ``{"answer", "strip"}`` or
``{"regex"}``) or ``check`` (scripts run in order with ``[answer, outputs of the earlier
scripts...]``; ``null`` means the task's ``example`` script; the task passes when all exit 0).

As in AgentBench, each episode runs as root in a system of its own (``TaskSystem``: a
copy-on-write Debian userland like AgentBench's Ubuntu image, in user, mount, pid, network, ipc
and uts namespaces): init scripts, the start script, the agent's shell and the checks all run
there, and it is thrown away afterwards. Differences:

- The standard checkers (integer-match, string-match, size-match) run natively in Python on the
  host; other check scripts run in the task's system, as AgentBench ran them.
- Script files (``init/*.sh``, ``check/0.sh``...) are read from AgentBench's scripts folder for
  the task file (``scripts``, or found beside it: ``default_scripts``); a task that names one
  not there, or that needs the internet (``apt install`` in its init), is marked ``unsupported``
  at load time with the reason.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from agentlm.agent.envs.base import Environment, EnvTask, Episode, Setup, TaskFileError
from agentlm.agent.protocols import os_opening, os_task
from agentlm.agent.tools.osimage import FLAVOURS, ensure_image
from agentlm.agent.tools.sandbox import SandboxLimits, ShellSession, ShellSettings
from agentlm.agent.tools.shell import ShellTool
from agentlm.agent.tools.tasksystem import TaskSystem

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


# Init and example code that fetches from the internet: a task system has no network.
_NEEDS_INTERNET = re.compile(
    r"(?:^|[\s;&|(`])((?:apt|apt-get|aptitude) +(?:-\S+ +)*install|pip3? +install|npm +install|"
    r"git +clone|(?:curl|wget)\b[^\n;&|]*\bhttps?://(?!localhost|127\.|\[::1\]))",
    re.M,
)


def _needs_internet(script: Script) -> str | None:
    found = _NEEDS_INTERNET.search(script.code or "")
    return (
        f"runs `{found.group(1).strip()}`, which needs the internet, and a task system has no network"
        if found
        else None
    )


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


def image_flavour(raw: dict[str, Any]) -> str:
    """Which of AgentBench's images a task names: ``"local": "packages"`` (its config's
    ``local-os/packages``) or ``"image": "local-os/packages"``; ``default`` when it names none."""
    create = raw.get("create")
    if not isinstance(create, dict):
        return "default"
    name = create.get("local") or create.get("image") or "default"
    return str(name).rsplit("/", 1)[-1].split(":", 1)[0]


def _unsupported(raw: dict[str, Any], task: OSTask) -> str | None:
    flavour = image_flavour(raw)
    if flavour not in FLAVOURS:
        return (
            f"needs the image {flavour!r}; task systems are built like AgentBench's "
            f"{', '.join(FLAVOURS)} images"
        )
    scripts: list[tuple[str, Script]] = [(f"init script {i}", s) for i, s in enumerate(task.init)]
    if task.start is not None:
        scripts.append(("start script", task.start))
    if task.example is not None:
        scripts.append(("example script", task.example))
    scripts += [(f"check script {i}", c) for i, c in enumerate(task.check) if isinstance(c, Script)]
    for where, script in scripts:
        if script.code is None:
            return (
                f"the {where} is the file {script.file!r}, which is not in the scripts folder "
                f"(built-in checks: {', '.join(NATIVE_CHECKS)}); pass AgentBench's scripts folder for "
                "this task file (agentlm tasks verify --scripts DIR)"
            )
        if script.language not in ("bash", "python"):
            return f"the {where} is in {script.language!r}; only bash and python scripts run here"
        if reason := _needs_internet(script):
            return f"the {where} {reason}"
    return None


def default_scripts(path: Path) -> Path | None:
    """AgentBench's scripts folder for a task file, where the file sits in a known layout:
    AgentBench's checkout (``data/os_interaction/data/N/x.json`` -> ``.../scripts/N``) or the
    shipped copy (``os_sets/os_N_x.json`` and ``os_dev.json`` -> ``os_scripts/N``, ``os_scripts/dev``)."""
    path = path.resolve()
    folder = path.parent
    candidates = [folder.parent.parent / "scripts" / folder.name]
    number = re.match(r"os_(\d+|dev)(?:_|\.|$)", path.name)
    if number:
        for above in (folder, *folder.parents[:2]):
            candidates.append(above / "os_scripts" / number.group(1))
    return next((c for c in candidates if c.is_dir()), None)


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
    """AgentBench os_interaction tasks, each as root in a throwaway task system."""

    name = "os"

    def __init__(
        self,
        scripts: str | Path | None = None,
        limits: SandboxLimits | None = None,
        settings: ShellSettings | None = None,
    ):
        self.scripts = Path(scripts) if scripts is not None else None  # None: found per task file
        self.limits = limits or SandboxLimits()
        self.settings = settings or ShellSettings()
        self._images: dict[str, Path] = {}

    def image(self, flavour: str = "default") -> Path:
        """The task systems' root filesystem for one of AgentBench's images (``FLAVOURS``), built on
        first use (about a minute)."""
        if flavour not in self._images:
            spec = replace(FLAVOURS[flavour], mirror=self.settings.image_mirror)
            self._images[flavour] = ensure_image(spec, uid_base=self.settings.system_uid_base)
        return self._images[flavour]

    def scripts_for(self, path: Path | None) -> Path | None:
        """AgentBench's scripts folder for the task file at `path`: the one given, or found beside it."""
        return self.scripts or (default_scripts(path) if path is not None else None)

    def load(self, path: str | Path) -> list[EnvTask]:
        path = Path(path)
        stem = path.name.removesuffix(".jsonl").removesuffix(".json")
        scripts = self.scripts_for(path)
        tasks = []
        for index, record in enumerate(_load_records(path)):
            description, parsed = _Reader(path, index, scripts).read(record)
            tasks.append(
                EnvTask(
                    id=f"{stem}-{index:05d}",
                    description=description,
                    raw=record,
                    unsupported=_unsupported(record, parsed),
                    source=path,
                )
            )
        return tasks

    def episode(self, task: EnvTask) -> OSEpisode:
        if task.unsupported:
            raise ValueError(f"task {task.id} cannot run here: {task.unsupported}")
        return OSEpisode(task, self)


class OSEpisode(Episode):
    """A fresh task system with the task's init run and its start script in the agent's shell;
    scored in the same system, as AgentBench scored it."""

    def __init__(self, task: EnvTask, env: OSEnvironment):
        super().__init__(task)
        self.env = env
        self.spec = _Reader(Path(task.id), 0, env.scripts_for(task.source)).read(task.raw)[1]
        self.system = TaskSystem(
            env.image(image_flavour(task.raw)),
            uid_base=env.settings.system_uid_base,
            disk_bytes=env.limits.disk_bytes,
        )
        try:
            self.session = ShellSession(env.limits, settings=env.settings, system=self.system)
            self._prepare()
        except BaseException:
            self.system.close()
            raise
        self.tool = ShellTool(session=self.session, limits=env.limits)

    def _prepare(self) -> None:
        """The task's init scripts (each in a fresh shell, as ``docker exec``), then its start script
        in the agent's shell."""
        for n, script in enumerate(self.spec.init):
            # AgentBench ran init independently of the shell and went on when one failed.
            result = self.session.run_isolated(script.argv())
            if result.timed_out:
                raise OSTaskSetupError(
                    f"task {self.task.id}: init script {n} ran past {self.env.limits.timeout_seconds:g} s: "
                    f"{result.output.strip()[-500:]!r}"
                )
            if result.exit_code != 0:
                log.info(
                    "task %s: init script %d exited %s: %s",
                    self.task.id,
                    n,
                    result.exit_code,
                    result.output[-300:],
                )
        if self.spec.start is not None:
            assert self.spec.start.code is not None
            if self.spec.start.language == "python":
                self.session.run(" ".join(["python3", "-c", shlex.quote(self.spec.start.code)]))
            else:
                self.session.run(self.spec.start.code)

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
        """AgentBench's check chain: each script in a fresh shell of the task's system, given the
        answer and the outputs of the scripts before it."""
        params = [str(answer)]
        for step in self.spec.check:
            if isinstance(step, str):
                if len(params) < 2 or not NATIVE_CHECKS[step](params[0], params[1]):
                    return False
                params.append("")
                continue
            script = self.spec.example if step is None else step
            assert script is not None
            result = self.session.run_isolated(script.argv(*params))
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
        self.system.close()

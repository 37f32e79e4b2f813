"""Instruction construction with a teacher: new DB and OS tasks, kept only when their reference passes.

AgentTuning built its DB and OS tasks this way: a teacher model (GPT-4) proposed a task together
with its reference solution, and a task was kept only when that solution passed the task's own
evaluation. Here the teacher is any OpenAI-compatible endpoint. Each request asks, in a short
prompt, for one JSON object; the seed picks a topic (and, for DB, a question type) per request,
so proposals differ.

- ``db``: a table, a question of one of AgentBench's types and the MySQL statement that answers
  it, written as an AgentBench dbbench record. It is kept when the statement runs, the query
  returns something (or the modification changes the table) and the DB environment's evaluation
  of the reference passes (``dbgen.label_and_verify``, which also fills the labels).
- ``os``: a description, an init script, an example solution and either a fixed answer or a check
  script, written as an AgentBench os_interaction record. It is kept when the sandbox can run it
  and the example solution passes its own evaluation (``Environment.verify``, what ``agentlm tasks
  verify`` runs; for a fixed answer, the solution's output must be that answer), and when a check
  script rejects a wrong answer.

Every proposal that is not kept is counted under its reason (no JSON, a missing field, SQL that
fails, a check that fails, ...); nothing a teacher replies stops the run. Kept tasks are appended
to ``--out`` (JSONL; the environments load it as it is); tasks already there count toward
``--n``, so an interrupted run resumes.

    python -m agentlm.data.instruct --env db --n 50 --out db_tasks.jsonl --model gpt-4o --base-url URL
"""

from __future__ import annotations

import collections
import json
import logging
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agentlm.agent.envs.base import Environment, EnvTask, TaskFileError
from agentlm.agent.envs.db import MODIFICATIONS, DBEnvironment
from agentlm.agent.envs.os import OSEnvironment
from agentlm.agent.models import ChatModel, GenerationParams, ModelEndpointError, OpenAIChatModel
from agentlm.agent.tools.sql import SQLError
from agentlm.data.collect import collected_ids, run_parallel
from agentlm.data.dbgen import KINDS, label_and_verify
from agentlm.data.formats import DataFormatError
from agentlm.options import invoke, options_from, settings_of

log = logging.getLogger(__name__)

# --- prompts ----------------------------------------------------------------------------------------

DB_PROMPT = """\
You write practice tasks for an agent that answers questions by querying a MySQL table.

Invent one small table about {topic}: 3 to 6 columns, 5 to 12 rows of realistic values. Then write \
one question of type "{kind}" about it, and the single MySQL statement that answers it.

Question types: "other" (look up values), "counting" (COUNT rows), "aggregation-SUM", \
"aggregation-MAX", "aggregation-MIN", "aggregation-AVG" (aggregate a column over the rows that \
match a condition), "ranking" (ORDER BY ... LIMIT), "INSERT" (add one row; the question gives every \
value), "UPDATE" (change values; the question names the rows and the new values).

Rules:
- Every column is stored as TEXT. Compare numbers as numbers (`Price` > 20); sort numbers with \
ORDER BY `Price` + 0.
- Quote the table and column names with backticks; use only this table and its columns.
- A question has a non-empty answer in this table and says exactly what to return.
- One statement, no comments.

Reply with one JSON object and nothing else, with exactly these fields:
{{"table": {{"name": "...", "columns": ["...", "..."], "rows": [["...", "..."]]}}, \
"type": "{kind}", "question": "...", "sql": "..."}}
"""

OS_PROMPT = """\
You write practice tasks for an agent that answers questions by running commands in a Linux bash shell.

Write one task about {topic}. The agent works as root in a fresh Debian system of its own, without \
network: it may write anywhere and use useradd, chown, chmod and su; python3, git, vim, curl, wget, zip, \
unzip, tree and the usual GNU tools are there, and nothing can be installed. The task asks for \
information: changes the agent makes to the system are not checked.

Fields:
- "description": the question as a user would ask it, saying what to answer and in what form \
(e.g. "Answer with the number only.").
- "init": a bash script that sets up what the task is about (files anywhere, users, groups, \
permissions), or "". No randomness, no background processes, nothing that needs the network.
- "solution": a bash script that prints the answer, and only the answer.
- exactly one of:
  - "answer": the exact text the solution prints, when init fixes the answer; or
  - "check": a bash script that exits 0 when the agent's answer is right and 1 otherwise. It gets \
the agent's answer as $1 and the solution's output as $2 (either may end with a newline: trim \
both before comparing), and runs in a fresh copy of the system after init.

Reply with one JSON object and nothing else:
{{"description": "...", "init": "...", "solution": "...", "answer": "..."}} \
(or "check" in place of "answer").
"""

DB_TOPICS = (
    "a school's students and their grades", "a bakery's products and prices", "football players and their goals",
    "a library's loans", "employees of a small company", "flights leaving an airport", "a garden's plants",
    "movies and their box office", "a hospital ward's patients", "cars for sale at a dealership",
    "mountain peaks and their heights", "a music festival's line-up", "a zoo's animals", "hotel bookings",
    "a city's bus routes", "video games and their sales", "a recipe collection", "chess tournament results",
    "rivers of the world", "a bike rental shop", "olympic medal counts", "a podcast's episodes",
)  # fmt: skip

OS_TOPICS = (
    "counting files by extension", "finding text in log files", "file and directory sizes",
    "counting lines and words in text files", "the newest or oldest file in a folder", "file permissions",
    "nested directory trees", "processing a CSV file with awk or cut", "hidden files", "empty files and folders",
    "duplicate lines in a file", "sorting and ranking numbers in a file", "symbolic links",
    "file names with a pattern", "summing numbers in files", "the shell environment and system information",
)  # fmt: skip

WRONG_ANSWER = "agentlm: certainly not the answer"  # a check that accepts this accepts anything


# --- what a teacher proposes ------------------------------------------------------------------------

Value = StrictStr | StrictInt | StrictFloat | None


class DBTable(BaseModel):
    name: StrictStr = Field(min_length=1)
    columns: list[StrictStr] = Field(min_length=1)
    rows: list[list[Value]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> DBTable:
        names = [c.strip().lower() for c in self.columns]
        if not all(names) or len(set(names)) != len(names):
            raise ValueError("column names must be non-empty and distinct (MySQL ignores their case)")
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"row {i} has {len(row)} values for {len(self.columns)} columns")
        return self


class DBProposal(BaseModel):
    table: DBTable
    type: StrictStr
    question: StrictStr = Field(min_length=1)
    sql: StrictStr = Field(min_length=1)

    @model_validator(mode="after")
    def _known_type(self) -> DBProposal:
        if self.type not in KINDS:
            raise ValueError(f"type {self.type!r} is not one of {', '.join(KINDS)}")
        return self


class OSProposal(BaseModel):
    description: StrictStr = Field(min_length=1)
    init: StrictStr = ""
    solution: StrictStr = Field(min_length=1)
    answer: StrictStr | None = None
    check: StrictStr | None = None

    @model_validator(mode="after")
    def _one_evaluation(self) -> OSProposal:
        if (self.answer is None) == (self.check is None):
            raise ValueError("give exactly one of 'answer' and 'check'")
        if self.answer is not None and not self.answer.strip():
            raise ValueError("'answer' is empty")
        return self


class Rejected(ValueError):
    """A proposal that is not kept: `reason` is the counted category, the message says more."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in a reply (bare, in a ```json fence, or after some prose)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise Rejected("no-json", f"no JSON object in the reply: {text[:120]!r}")


def _parse(text: str, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(extract_json(text))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<reply>"
        if first["type"] == "missing":
            reason = "missing-field"
        elif first["type"].endswith("_type"):
            reason = "wrong-type"
        else:
            reason = "invalid-value"
        raise Rejected(reason, f"{where}: {first['msg']}") from None


def _load_one(environment: Environment, record: dict[str, Any]) -> EnvTask:
    """The record as the environment loads it from a task file (its checks, its `unsupported`)."""
    with tempfile.TemporaryDirectory(prefix="agentlm-instruct-") as tmp:
        path = Path(tmp) / "task.jsonl"
        path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
        try:
            return environment.load(path)[0]
        except TaskFileError as e:
            raise Rejected("invalid-task", str(e)) from None


# --- DB ---------------------------------------------------------------------------------------------


def db_record(proposal: DBProposal, task_id: str, source: str) -> dict[str, Any]:
    """The proposal in AgentBench's dbbench shape (query labels still empty, as dbgen leaves them)."""
    table, kind, sql = proposal.table, proposal.type, proposal.sql.strip()
    columns = [c.strip() for c in table.columns]
    return {
        "description": proposal.question.strip(),
        "label": [sql] if kind in MODIFICATIONS else [],
        "table": {
            "table_name": table.name.strip(),
            "table_info": {
                "columns": [{"name": c, "type": "TEXT"} for c in columns],
                # What MySQL stores in a TEXT column, as dbgen writes it.
                "rows": [[None if v is None else str(v) for v in row] for row in table.rows],
            },
        },
        "type": [kind],
        "heads": columns,
        "add_description": f"The name of this table is {table.name.strip()}, and the headers of this table are {','.join(columns)}.",
        "sql": {"query": sql},
        "source": source,
        "id": task_id,
    }


def verify_db(record: dict[str, Any]) -> None:
    """Fill the labels and keep the record only if its gold SQL runs and passes; raises Rejected."""
    environment = DBEnvironment()
    task = _load_one(environment, record)
    if task.unsupported:
        raise Rejected("sql-failed", task.unsupported)
    kind, table = record["type"][0], record["table"]["table_name"]
    with environment.episode(task) as episode:
        before = collections.Counter(episode.tool.table_rows(table))
        try:
            episode.reference_answer()
        except SQLError as e:
            raise Rejected("sql-failed", str(e).strip().splitlines()[0]) from None
        if kind in MODIFICATIONS and collections.Counter(episode.tool.table_rows(table)) == before:
            raise Rejected("no-change", "the statement leaves the table as it was")
    kept, _ = label_and_verify([record])
    if not kept:
        raise Rejected("check-failed", "the reference answer does not pass the task's evaluation")
    if kind not in MODIFICATIONS and all(v is None or v == "none" for v in record["label"]):
        raise Rejected("empty-result", f"the query returns nothing: {record['sql']['query']!r}")


def db_task(reply: str, task_id: str, source: str) -> dict[str, Any]:
    record = db_record(_parse(reply, DBProposal), task_id, source)
    verify_db(record)
    return record


def db_prompt(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(DB_TOPICS)
    return DB_PROMPT.format(topic=topic, kind=rng.choice(KINDS)), topic


# --- OS ---------------------------------------------------------------------------------------------


def os_record(proposal: OSProposal, task_id: str, source: str, topic: str) -> dict[str, Any]:
    """The proposal in AgentBench's os_interaction shape; a check gets the example's output as $2."""
    create: dict[str, Any] = {"local": "default"}
    if proposal.init.strip():
        create["init"] = {"code": proposal.init}
    example = {"code": proposal.solution}
    if proposal.answer is not None:
        evaluation: dict[str, Any] = {"match": proposal.answer.strip(), "example": example}
    else:
        evaluation = {"check": [None, {"language": "bash", "code": proposal.check}], "example": example}
    return {
        "description": proposal.description.strip(),
        "create": create,
        "evaluation": evaluation,
        "labels": [topic],
        "source": source,
        "id": task_id,
    }


def verify_os(record: dict[str, Any], environment: OSEnvironment | None = None) -> None:
    """Keep the record only if its example solution passes its own evaluation here; raises Rejected."""
    environment = environment or OSEnvironment()
    task = _load_one(environment, record)
    if task.unsupported:
        raise Rejected("unsupported", task.unsupported)
    evaluation = record["evaluation"]
    if "match" in evaluation:
        # The environment's reference for a fixed answer is the answer itself: run the solution instead.
        with environment.episode(task) as episode:
            output = episode.session.run(evaluation["example"]["code"]).output.strip()
            if episode.reward(output) < 1.0:
                raise Rejected(
                    "check-failed",
                    f"the solution prints {output[:80]!r}, the answer is {evaluation['match']!r}",
                )
        return
    _, reward, note = next(iter(environment.verify([task])))
    if note:
        raise Rejected("run-failed", note)
    if reward is None or reward < 1.0:
        raise Rejected("check-failed", "the solution's output does not pass the check")
    with environment.episode(task) as episode:
        if episode.reward(WRONG_ANSWER) >= 1.0:
            raise Rejected("check-too-lenient", "the check accepts a wrong answer")


def os_task(reply: str, task_id: str, source: str, topic: str) -> dict[str, Any]:
    record = os_record(_parse(reply, OSProposal), task_id, source, topic)
    verify_os(record)
    return record


def os_prompt(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(OS_TOPICS)
    return OS_PROMPT.format(topic=topic), topic


@dataclass(frozen=True)
class Family:
    prompt: Callable[[random.Random], tuple[str, str]]  # -> (prompt, topic)
    task: Callable[[str, str, str, str], dict[str, Any]]  # (reply, id, source, topic) -> verified record


FAMILIES = {
    "db": Family(db_prompt, lambda reply, task_id, source, topic: db_task(reply, task_id, source)),
    "os": Family(os_prompt, os_task),
}


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class InstructReport:
    proposed: int = 0
    kept: int = 0
    already: int = 0  # tasks already in the output (resumed)
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    why: dict[str, str] = field(default_factory=dict)  # task id -> why it was not kept

    def lines(self) -> list[str]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.rejected.most_common()) or "none"
        return [
            f"{self.proposed} proposed, {self.kept} kept, {sum(self.rejected.values())} rejected "
            f"({reasons}); {self.already} already in the output ({self.seconds:.1f} s)",
            f"tokens: {self.prompt_tokens} prompt, {self.completion_tokens} completion",
        ]


def construct(
    env: str,
    teacher: ChatModel,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    workers: int = 1,
    generation: GenerationParams | None = None,
    progress: bool = True,
) -> InstructReport:
    """Ask `teacher` for tasks until `out` (JSONL, appended to) has been offered `n`; keep verified ones."""
    family = FAMILIES[env]
    out = Path(out)
    generation = generation or GenerationParams(max_tokens=1024, temperature=0.7)
    done = collected_ids(out)
    report = InstructReport(already=len(done))
    lock = threading.Lock()
    started = time.perf_counter()
    ids = [f"instruct-{env}-{seed}-{i:05d}" for i in range(n)]
    # Proposals whose id is not in the output yet (rejected last time, or never asked), as many as
    # --n still allows: tasks from another seed already there count toward it too.
    todo = [i for i in range(n) if ids[i] not in done][: max(0, n - len(done))]

    def reject(task_id: str, error: Rejected) -> None:
        log.info("%s rejected: %s", task_id, error)
        with lock:
            report.rejected[error.reason] += 1
            report.why[task_id] = str(error)

    def one(i: int) -> None:
        task_id, rng = ids[i], random.Random(f"{seed}:{i}")
        prompt, topic = family.prompt(rng)
        params = replace(generation, seed=rng.randrange(2**31))
        with lock:
            report.proposed += 1
        try:
            completion = teacher.complete([{"role": "user", "content": prompt}], params)
        except ModelEndpointError as e:
            reject(task_id, Rejected("teacher-error", str(e)))
            return
        with lock:
            report.prompt_tokens += completion.prompt_tokens
            report.completion_tokens += completion.completion_tokens
        try:
            record = family.task(
                completion.text, task_id, f"agentlm-instruct/{env}/{teacher.model_id}", topic
            )
        except Rejected as e:
            reject(task_id, e)
            return
        except Exception as e:  # one broken proposal must not stop the run
            log.warning("%s: verifying the proposal failed: %s", task_id, e)
            reject(task_id, Rejected("error", f"{type(e).__name__}: {e}"))
            return
        with lock:
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            report.kept += 1

    out.parent.mkdir(parents=True, exist_ok=True)
    run_parallel(one, todo, workers, f"constructing {env} tasks" if progress else None)
    report.seconds = time.perf_counter() - started
    return report


PROG = "agentlm data instruct"


class InstructSettings(BaseModel):
    """What `agentlm data instruct` takes: one field an option."""

    model_config = ConfigDict(extra="forbid")

    env: Literal["db", "os"] = Field(description="The kind of task to construct.")  # FAMILIES' keys
    n: int = Field(default=50, ge=0, description="Tasks to propose (those already in --out count).")
    out: Path = Field(description="JSONL task file to append kept tasks to.")
    model: str = Field(description="The teacher's model id.")
    base_url: str = Field(description="Its OpenAI-compatible endpoint.")
    api_key: str = Field(default="EMPTY", description="The endpoint's API key.")
    workers: int = Field(default=1, ge=1, description="Proposals asked for and verified at once, in threads.")
    seed: int = Field(default=0, description="Picks each request's topic (and DB question type).")
    temperature: float = Field(default=0.7, ge=0, description="The teacher's sampling temperature.")
    max_tokens: int = Field(default=1024, ge=1, description="The longest reply asked of the teacher.")
    timeout: float = Field(default=120.0, gt=0, description="Seconds per teacher request.")
    quiet: bool = Field(default=False, description="No progress bar.")

    @field_validator("out")
    @classmethod
    def _os_tasks_are_jsonl(cls, out: Path, info: ValidationInfo) -> Path:
        if info.data.get("env") == "os" and out.suffix != ".jsonl":
            raise PydanticCustomError(
                "os_out_not_jsonl",
                "for OS tasks it must end in .jsonl (the OS environment reads other files as one JSON list)",
            )
        return out


@options_from(InstructSettings, InstructSettings.model_fields)
def run(**options: Any) -> None:
    """Have a teacher propose new DB or OS tasks; keep those whose reference passes its own check."""
    settings = settings_of(InstructSettings, options, PROG)
    teacher = OpenAIChatModel(
        settings.model, settings.base_url, api_key=settings.api_key, timeout=settings.timeout
    )
    generation = GenerationParams(max_tokens=settings.max_tokens, temperature=settings.temperature)
    try:
        report = construct(
            settings.env,
            teacher,
            settings.n,
            settings.out,
            seed=settings.seed,
            workers=settings.workers,
            generation=generation,
            progress=not settings.quiet,
        )
    except DataFormatError as e:  # --out holds something that is not a task file of ours
        typer.echo(f"{PROG}: {e}", err=True)
        raise typer.Exit(2) from None
    for line in report.lines():
        print(line)


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, PROG)


if __name__ == "__main__":
    main()

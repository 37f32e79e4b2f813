"""Evaluation that compares checkpoints as agents and as general models.

For each model (a checkpoint directory, ``embedded``, or ``NAME=URL`` for a served endpoint):

- **agent tasks**: every task of each task file (AgentBench DB/OS files; held-in sets such as the
  dev sets, held-out sets such as ``agentlm data dbgen --domains heldout``) runs through the ReAct
  loop in its environment, greedy as AgentBench decoded; the score is the success rate (reward 1).
  Local checkpoints are served with ``agentlm serve`` on 127.0.0.1 for the run, so the model sees
  exactly what serving gives it (its chat template, its stops).
- **general ability**: multiple-choice accuracy on ``data/bundled/general_mc.jsonl`` (32 general
  knowledge questions written for AgentLM, Apache-2.0), scored by the log-likelihood of each
  choice, and perplexity on held-out general chat (``data/bundled/general_chat.jsonl`` or a
  given file), both with the checkpoint loaded in-process.

It prints one table (a row per model) and can write it as JSON and as a bar chart PNG.

    python -m agentlm.train.eval --model embedded --model runs/tuned --tasks heldout.jsonl --plot eval.png
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlm.agent.envs import detect_environment, environment_for
from agentlm.agent.loop import Agent, AgentConfig
from agentlm.agent.models import GenerationParams, OpenAIChatModel
from agentlm.data.formats import read_jsonl
from agentlm.options import invoke, options_from, settings_of


@dataclass
class EvalRow:
    model: str
    tasks: dict[str, float] = field(default_factory=dict)  # task file stem -> success rate
    mc_accuracy: float | None = None
    perplexity: float | None = None
    # task file stem -> AgentBench's task type (dbbench: SELECT, INSERT, counting, ...) -> success rate
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)


def bundled(name: str) -> Path:
    return Path(str(resources.files("agentlm.data") / "bundled" / name))


def agent_success(
    model: OpenAIChatModel,
    task_file: Path,
    limit: int | None = None,
    max_tokens: int = 256,
    parallel: int = 8,
    max_rounds: int | None = None,
    runs_out: Path | None = None,
    scripts: Path | None = None,
) -> tuple[float, dict[str, float]]:
    """The share of runnable tasks in `task_file` the model solves (reward >= 1), overall and by
    the task type AgentBench reports (a dbbench record's ``type``; OS tasks have none).

    Tasks run ``parallel`` at a time, each in its own episode; the server batches their requests.
    With ``runs_out``, every run is written there (JSONL: task id, reward, trajectory), to read
    what the model did.
    """
    name = detect_environment(task_file)
    env = environment_for(task_file, name, scripts if name == "os" else None)
    tasks = [t for t in env.load(task_file) if not t.unsupported][:limit]
    if not tasks:
        raise ValueError(f"{task_file}: no task that can run here")
    config = AgentConfig(
        generation=GenerationParams(max_tokens=max_tokens, temperature=0.0), max_rounds=max_rounds
    )

    def solve(task: Any) -> tuple[float, Any]:
        with env.episode(task) as episode:
            traj = Agent(model, episode.setup(), config).run()
            return episode.reward(traj.final_answer), traj

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        results = list(pool.map(solve, tasks))
    if runs_out:
        runs_out.parent.mkdir(parents=True, exist_ok=True)
        with runs_out.open("w") as f:
            for task, (reward, traj) in zip(tasks, results, strict=True):
                f.write(json.dumps({"task": task.id, "reward": reward, "trajectory": traj.to_dict()}) + "\n")
    solved = [reward >= 1.0 for reward, _ in results]
    by_type: dict[str, list[bool]] = {}
    for task, ok in zip(tasks, solved, strict=True):
        kind = task_type(task.raw)
        if kind:
            by_type.setdefault(kind, []).append(ok)
    return sum(solved) / len(tasks), {k: sum(v) / len(v) for k, v in sorted(by_type.items())}


def task_type(record: dict[str, Any]) -> str | None:
    """AgentBench's type of a task record: dbbench's first ``type`` ("SELECT", "counting",
    "aggregation-SUM", "INSERT", ...), as its results table groups them; None for OS tasks."""
    kind = record.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    return str(kind) if kind else None


def _load(checkpoint: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentlm.serve.engines.weights import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def mc_accuracy(model: Any, tokenizer: Any, path: Path | None = None) -> float:
    """Accuracy on multiple-choice questions, each choice scored by its summed log-likelihood."""
    import torch

    items = [
        json.loads(line)
        for line in (path or bundled("general_mc.jsonl")).read_text().splitlines()
        if line.strip()
    ]
    right = 0
    for item in items:
        prompt = f"Question: {item['question']}\nAnswer:"
        prompt_ids = tokenizer(prompt)["input_ids"]
        scores = []
        for choice in item["choices"]:
            ids = tokenizer(prompt + " " + choice)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
            targets = torch.tensor(ids[1:])
            picked = logp[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :]
            scores.append(picked.sum().item())
        right += max(range(len(scores)), key=scores.__getitem__) == item["answer"]
    return right / len(items)


def chat_perplexity(model: Any, tokenizer: Any, path: Path | None = None, limit: int = 40) -> float:
    """Perplexity of the assistant's replies in held-out chat, rendered with the model's chat template."""
    import torch

    from agentlm.data.masks import IGNORE_INDEX, tokenize_conversation
    from agentlm.data.templates import get_template, turn_format

    name = turn_format(tokenizer.chat_template or "")
    if name is None:
        raise ValueError("the checkpoint's chat template is not one of AgentLM's; cannot mask its replies")
    template = get_template(name)
    nll, count = 0.0, 0
    for conv in read_jsonl(path or bundled("general_chat.jsonl"))[:limit]:
        ex = tokenize_conversation(tokenizer, template, conv)
        ids, labels = torch.tensor([ex.input_ids]), torch.tensor([ex.labels])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].float()
        targets = labels[0, 1:]
        keep = targets != IGNORE_INDEX
        nll += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
        count += int(keep.sum())
    return math.exp(nll / count)


def evaluate(
    specs: list[str],
    task_files: list[Path],
    limit: int | None,
    general: bool,
    max_tokens: int = 256,
    parallel: int = 8,
    max_rounds: int | None = None,
    runs_dir: Path | None = None,
    scripts: Path | None = None,
) -> list[EvalRow]:
    from agentlm.processes import free_port, start_server, stop

    rows = []
    for spec in specs:
        name, _, url = spec.partition("=")
        row = EvalRow(model=name)
        with ExitStack() as stack:
            if task_files:
                if url:
                    model = OpenAIChatModel(_served_id(url), url)
                else:
                    port = free_port()
                    proc, _ = start_server(["--model", name], port, timeout=600)
                    stack.callback(stop, proc)
                    base = f"http://127.0.0.1:{port}/v1"
                    model = OpenAIChatModel(_served_id(base), base)
                for path in task_files:
                    runs_out = runs_dir / f"{Path(name).name}-{path.stem}.jsonl" if runs_dir else None
                    row.tasks[path.stem], kinds = agent_success(
                        model, path, limit, max_tokens, parallel, max_rounds, runs_out, scripts
                    )
                    if kinds:
                        row.by_type[path.stem] = kinds
            if general and not url:
                lm, tokenizer = _load(name)
                row.mc_accuracy = mc_accuracy(lm, tokenizer)
                row.perplexity = chat_perplexity(lm, tokenizer)
        rows.append(row)
    return rows


def _served_id(base_url: str) -> str:
    import openai

    return openai.OpenAI(base_url=base_url, api_key="EMPTY").models.list().data[0].id


def table(rows: list[EvalRow]) -> str:
    task_names = sorted({t for r in rows for t in r.tasks})
    header = ["model", *task_names, "general MC", "chat ppl"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        cells = [r.model, *(f"{r.tasks[t]:.1%}" if t in r.tasks else "-" for t in task_names)]
        cells.append(f"{r.mc_accuracy:.1%}" if r.mc_accuracy is not None else "-")
        cells.append(f"{r.perplexity:.2f}" if r.perplexity is not None else "-")
        lines.append(" | ".join(cells))
    for stem in sorted({s for r in rows for s in r.by_type}):  # AgentBench's per-type rows
        kinds = sorted({k for r in rows for k in r.by_type.get(stem, {})})
        lines += [
            "",
            " | ".join([f"{stem} by type", *kinds]),
            " | ".join("---" for _ in range(len(kinds) + 1)),
        ]
        for r in rows:
            cells = [f"{r.by_type[stem][k]:.1%}" if k in r.by_type.get(stem, {}) else "-" for k in kinds]
            lines.append(" | ".join([r.model, *cells]))
    return "\n".join(lines)


def plot(rows: list[EvalRow], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({t for r in rows for t in r.tasks}) + ["general MC"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(rows))
    for k, r in enumerate(rows):
        values = [r.tasks.get(m, 0.0) for m in metrics[:-1]] + [r.mc_accuracy or 0.0]
        ax.bar([i + k * width for i in range(len(metrics))], values, width, label=r.model)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_ylabel("success / accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


class EvalSettings(BaseModel):
    """`agentlm eval`: the models compared, the task files they run, and where the table goes."""

    model_config = ConfigDict(extra="forbid")

    model: list[str] = Field(
        min_length=1, description="Checkpoint dir, 'embedded', or NAME=URL; repeat it for a row per model."
    )
    tasks: list[Path] = Field(default_factory=list, description="AgentBench DB/OS task file; repeatable.")
    limit: int | None = Field(default=None, ge=1, description="At most this many tasks per file.")
    max_tokens: int = Field(default=256, ge=1, description="Per model reply in agent tasks.")
    max_rounds: int | None = Field(
        default=None, ge=1, description="Model turns per task (default: the environment's, 15 for DB)."
    )
    parallel: int = Field(default=8, ge=1, description="Agent tasks run at once.")
    runs: Path | None = Field(default=None, description="Write every agent run here (MODEL-TASKFILE.jsonl).")
    scripts: Path | None = Field(
        default=None, description="OS task files: AgentBench's scripts folder (default: beside each file)."
    )
    general: bool = Field(
        default=True,
        description="Also score general ability: multiple choice and perplexity (--no-general skips them).",
    )
    # The option is --json; a field of that name would shadow BaseModel.json.
    json_file: Path | None = Field(default=None, description="Write the rows as JSON here.")
    plot: Path | None = Field(default=None, description="Write a bar chart PNG here.")


@options_from(EvalSettings, EvalSettings.model_fields, flags={"json_file": ("--json",)})
def run(**options: Any) -> None:
    """Evaluation that compares checkpoints as agents and as general models."""
    settings = settings_of(EvalSettings, options, "agentlm eval")
    rows = evaluate(
        settings.model,
        settings.tasks,
        settings.limit,
        settings.general,
        settings.max_tokens,
        settings.parallel,
        settings.max_rounds,
        settings.runs,
        settings.scripts,
    )
    print(table(rows))
    if settings.json_file:
        settings.json_file.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    if settings.plot:
        print(f"plot: {plot(rows, settings.plot)}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm eval")


if __name__ == "__main__":
    main()

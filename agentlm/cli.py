"""The `agentlm` command: one entry point, a subcommand per part of the product.

Heavy imports (torch, transformers, streamlit) happen inside the subcommands that need them, so
`agentlm --help` answers at once.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from agentlm.api import DEFAULT_API_URL
from agentlm.options import invalid, options_from
from agentlm.serve.settings import ServeSettings

if TYPE_CHECKING:
    from agentlm.serve.store import TrajectoryStore

app = typer.Typer(
    help="AgentLM: serve an agent-tuned model, run agents with tools, log what they do, retrain on it.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Build and export training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
tasks_app = typer.Typer(help="Task environments with rewards (AgentBench DB and OS).", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="'embedded' (the shipped AgentLM tune of Gemma 3 270M), 'embedded-base' (its untuned base), a local checkpoint directory, or a Hugging Face hub id.",
    ),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"agentlm: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# `agentlm serve`'s options are ServeSettings' fields (their help is the fields' descriptions).
SERVE_OPTIONS = (
    "model", "host", "port", "engine", "remote_url", "remote_api_key", "served_model_name", "api_key",
    "store", "promotions", "profiles", "num_threads", "max_batch_size", "max_queue", "context_tokens", "prompt_lookup",
    "dtype", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "cors_origins",
)  # fmt: skip


@app.command()
@options_from(ServeSettings, SERVE_OPTIONS)
def serve(
    lora: Annotated[
        list[str] | None, typer.Option(help="vLLM: a LoRA adapter as NAME=DIR; repeatable.")
    ] = None,
    **options: Any,
) -> None:
    """Serve the model and the agent profiles behind an OpenAI-compatible API."""
    from agentlm.serve.app import run
    from agentlm.serve.engines import EngineError, ModelNotFoundError

    adapters = {}
    for item in lora or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            _fail(f"--lora expects NAME=DIR, got {item!r}")
        adapters[name] = path
    if adapters:
        options["lora_adapters"] = adapters
    try:
        settings = ServeSettings(**options)
    except ValidationError as e:
        _fail("invalid settings: " + invalid(e))
    try:
        run(settings)
    except (ModelNotFoundError, EngineError) as e:
        _fail(str(e))


def _ui_script() -> Path:
    return Path(str(resources.files("agentlm.ui") / "app.py"))


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port for the Streamlit app.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    api_url: Annotated[str, typer.Option(help="The AgentLM API the app talks to.")] = DEFAULT_API_URL,
) -> None:
    """Run the Streamlit assistant (it talks to the API over HTTP only)."""
    sys.exit(subprocess.call(_ui_command(host, port), env=_ui_env(api_url)))


def _ui_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(_ui_script()),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def _ui_env(api_url: str) -> dict[str, str]:
    return {**os.environ, "AGENTLM_API_URL": api_url}


@app.command()
def up(
    model: ModelOpt = "embedded",
    host: Annotated[str, typer.Option(help="Address for both the API and the UI.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    ui_port: Annotated[int, typer.Option(help="Streamlit port.")] = 8501,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Start the API only.")] = False,
) -> None:
    """Start the API and the Streamlit assistant together; Ctrl-C stops both."""
    from agentlm.processes import ServerStartError, start_server, stop

    api = f"http://{host}:{port}"
    typer.echo(
        f"Starting the AgentLM API on {api} with model {model!r} (the first start converts the model) ..."
    )
    procs: list[subprocess.Popen] = []
    try:
        server, seconds = start_server(["--model", model], port, host)
        procs.append(server)
        typer.echo(
            f"API ready in {seconds:.1f} s: {api}/v1 (OpenAI-compatible; model ids at {api}/v1/models)"
        )
        if not no_ui:
            procs.append(subprocess.Popen(_ui_command(host, ui_port), env=_ui_env(f"{api}/v1")))
            typer.echo(f"Assistant UI: http://{host}:{ui_port}")
        typer.echo("Press Ctrl-C to stop.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        _fail("a child process exited; stopping the rest", code=1)
    except ServerStartError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        typer.echo("Stopping ...")
    finally:
        for p in procs:
            stop(p)


@app.command()
def chat(
    profile: Annotated[
        str, typer.Option(help="Agent profile to talk to, or a base model id for plain chat.")
    ] = "hr-assistant",
    api_url: Annotated[str, typer.Option(help="The AgentLM API.")] = DEFAULT_API_URL,
    api_key: Annotated[str, typer.Option(envvar="AGENTLM_API_KEY", help="Bearer key.")] = "EMPTY",
) -> None:
    """Chat in the terminal with an agent (steps shown as they happen) or the raw model.

    Each question goes with the conversation so far (questions and the answers shown), so
    follow-ups work; `/new` starts a new conversation.
    """
    from agentlm.ui.client import AgentLMClient, APIUnavailableError

    client = AgentLMClient(api_url, api_key)
    try:
        agents = {m.id for m in client.models() if m.is_agent}
    except APIUnavailableError as e:
        _fail(str(e))
    is_agent = profile in agents
    typer.echo(f"Talking to {profile!r} at {api_url}. /new starts over; empty line or Ctrl-D quits.")
    history: list[dict[str, str]] = []
    while True:
        try:
            question = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not question:
            break
        if question == "/new":
            history.clear()
            typer.echo("(a new conversation)")
            continue
        try:
            if is_agent:
                answer, trajectory_id, pending = _chat_agent_turn(client, profile, question, history)
            else:
                typer.echo("model> ", nl=False)
                messages = [*history, {"role": "user", "content": question}]
                answer = "".join(_echo(delta) for delta in client.chat(profile, messages))
                typer.echo()
            # Only an answered question joins the conversation: it stays user, assistant, ...
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            if is_agent:
                _review_agent_turn(client, trajectory_id, pending)
        except APIUnavailableError as e:  # say what went wrong and keep the conversation going
            typer.secho(f"\nagentlm: {e}", fg=typer.colors.RED, err=True)


def _echo(text: str) -> str:
    typer.echo(text, nl=False)
    return text


def _chat_agent_turn(
    client, profile: str, question: str, history: list[dict[str, str]]
) -> tuple[str, str | None, list[str] | None]:
    """Run one question with the conversation before it, showing the steps; returns the answer,
    the trajectory id and the database changes waiting for approval."""
    answer, trajectory_id, pending = "", None, None
    for event in client.stream_agent(profile, question, history):
        if event.step is not None:
            step = event.step
            if step.get("thought"):
                typer.secho(f"  thought: {step['thought']}", dim=True)
            call = step.get("tool_call")
            if call:
                typer.secho(f"  {call['name']}: {call['input']}", fg=typer.colors.CYAN)
            if step.get("kind") == "action":
                typer.secho(
                    f"  -> {step['observation']}", fg=typer.colors.YELLOW if step.get("error") else None
                )
        if event.text:
            typer.echo(event.text, nl=False)
            answer += event.text
        trajectory_id = event.trajectory_id or trajectory_id
        pending = event.pending_writes or pending
    typer.echo()
    return answer, trajectory_id, pending


def _review_agent_turn(client, trajectory_id: str | None, pending: list[str] | None) -> None:
    """Ask the user to approve the run's database changes, if any, and to rate the answer."""
    if trajectory_id and pending:
        typer.secho("The assistant wants to change the database (nothing is saved yet):", bold=True)
        for statement in pending:
            typer.secho(f"  {statement}", fg=typer.colors.CYAN)
        apply = input("Apply these changes? [y/N] ").strip().lower() == "y"
        report = client.decide_writes(
            trajectory_id, "approve" if apply else "discard", approved_by="agentlm chat"
        )
        typer.echo("Changes saved." if report["writes_status"] == "applied" else "Changes discarded.")
    if trajectory_id:
        answer = input("Was this right? [y/n/Enter to skip] ").strip().lower()
        if answer in {"y", "n"}:
            client.send_feedback(trajectory_id, 1 if answer == "y" else -1)
            typer.echo("Thanks: recorded.")


STORE_HELP = (
    "Trajectory store: a SQLite file or a postgresql:// URL (default: the server's, AGENTLM_STORE_URL)."
)


@data_app.command("export")
def data_export(
    out: Annotated[Path, typer.Option(help="JSONL file to write (AgentInstruct format).")],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    include_all: Annotated[
        bool, typer.Option("--all", help="Export every run, not only liked or rewarded ones.")
    ] = False,
) -> None:
    """Write logged trajectories as training conversations (liked or reward-1 runs by default)."""
    from agentlm.data.export import export_trajectories

    with _stored_runs(store, "start `agentlm serve` and run an agent first") as trajectories:
        report = export_trajectories(trajectories.snapshot(), out, include_all=include_all)
    typer.echo(
        f"wrote {report.written} of {report.examined} trajectories to {out} ({report.skipped} skipped)"
    )


@data_app.command("preferences")
def data_preferences(
    out: Annotated[Path, typer.Option(help="JSONL file to write (AgentInstruct records with a preference).")],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Write users' feedback as preference data: thumbs as KTO records, corrections as DPO pairs."""
    from agentlm.data.preferences import write_preferences

    with _stored_runs(store, "start `agentlm serve` and rate some runs first") as trajectories:
        r = write_preferences(trajectories.snapshot(), out)
    typer.echo(
        f"wrote {r.pairs + r.liked + r.disliked} preference records to {out} from {r.examined} runs: "
        f"{r.pairs} corrections (pairs), {r.liked} liked, {r.disliked} disliked; {r.skipped} skipped"
    )


def _stored_runs(store: str | None, hint: str) -> TrajectoryStore:
    """The trajectory store, read-only; a failure that says what to do when it cannot be opened."""
    from agentlm.serve.store import StoreError, open_store

    try:
        return open_store(store or ServeSettings().store, readonly=True)
    except StoreError as e:
        _fail(f"{e}: {hint}, or pass --store")


@data_app.command("hr-db")
def data_hr_db(
    out: Annotated[Path | None, typer.Option(help="DuckDB file to write.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Build the sample HR database the HR and scheduling assistants use."""
    from agentlm.agent.databases.hr import build_hr_database
    from agentlm.paths import home

    path = build_hr_database(out or home() / "hr.duckdb", seed)
    typer.echo(f"wrote {path}")


# Subcommands that are a module's own command line (its main(argv), made from its settings model
# by agentlm/options.py), passed through untouched.
FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _forward(group: typer.Typer, name: str, target: str, help: str) -> None:
    """`agentlm ... NAME ARGS` runs `target(ARGS)` ("module:function"), imported only when used."""

    def command(ctx: typer.Context) -> None:
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)(ctx.args)

    group.command(name, context_settings=FORWARD, help=help)(command)


for _name, _target, _help in (
    (
        "collect",
        "agentlm.data.collect:main",
        "Collect reward-filtered trajectories with a teacher over task files.",
    ),
    (
        "general",
        "agentlm.data.general:main",
        "Prepare general chat: English, clean, split at turns, GPT-4:GPT-3.5 at 1:4.",
    ),
    (
        "pydocs",
        "agentlm.data.pydocs:main",
        "General chat from Python's own documentation, for machines without the hub.",
    ),
    (
        "mix",
        "agentlm.data.mix:main",
        "Mix agent trajectories with general chat at eta (agent share of examples), with a report.",
    ),
    (
        "assistant",
        "agentlm.data.assistant:main",
        "HR and scheduling assistant conversations over generated companies, every step run and checked.",
    ),
    (
        "toolcalls",
        "agentlm.data.toolcalls:main",
        "Tool-calling conversations in the embedded model's format (one, two, chained or no calls).",
    ),
    (
        "dbgen",
        "agentlm.data.dbgen:main",
        "Generate verified dbbench-format DB tasks (training or held-out domains).",
    ),
    (
        "instruct",
        "agentlm.data.instruct:main",
        "Have a teacher propose new DB or OS tasks; keep those whose reference passes its own check.",
    ),
    (
        "thoughts",
        "agentlm.data.thoughts:main",
        "Give actions that lack a thought one from a teacher, marked as such.",
    ),
    (
        "decontaminate",
        "agentlm.data.decontaminate:main",
        "Drop training examples whose task overlaps an evaluation task.",
    ),
    (
        "stats",
        "agentlm.data.stats:main",
        "Examples, tokens, lengths per source of a training set; --plot writes a PNG.",
    ),
):
    _forward(data_app, _name, _target, _help + " (--help there)")


@data_app.command("scheduling-db")
def data_scheduling_db(
    out: Annotated[Path | None, typer.Option(help="DuckDB file to write.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Build the sample scheduling database the scheduling assistant uses."""
    from agentlm.agent.databases.scheduling import build_scheduling_database
    from agentlm.paths import home

    path = build_scheduling_database(out or home() / "scheduling.duckdb", seed)
    typer.echo(f"wrote {path}")


@tasks_app.command("verify")
def tasks_verify(
    file: Annotated[
        Path, typer.Argument(help="A task file: AgentBench dbbench JSONL or os_interaction JSON.")
    ],
    env: Annotated[str | None, typer.Option(help="'db' or 'os' (default: from the file).")] = None,
    scripts: Annotated[
        Path | None,
        typer.Option(
            "--scripts",
            help="OS tasks: AgentBench's scripts folder for this task file (its check/, example/ and "
            "init/); default: found beside the file in AgentBench's layout",
        ),
    ] = None,
) -> None:
    """Run every task's reference solution in its environment and print its reward.

    The last line is `N/M passed`; tasks that cannot run here count as not passed and say why.
    Data construction keeps only tasks whose reference solution passes its own evaluation. Exits
    with 1 when a task that can run here fails.
    """
    from agentlm.agent.envs import TaskFileError, environment_for

    try:
        environment = environment_for(file, env, scripts)
        tasks = environment.load(file)
    except (TaskFileError, ValueError) as e:
        _fail(str(e))
    passed = failed = 0
    for task, reward, note in environment.verify(tasks):
        shown = "skip" if reward is None else f"{reward:.1f}"
        passed += reward is not None and reward >= 1.0
        failed += reward is not None and reward < 1.0
        typer.echo(f"{task.id}\t{shown}" + (f"\t{note}" if note else ""))
    typer.echo(f"{passed}/{len(tasks)} passed")
    if failed:
        raise typer.Exit(1)


_forward(
    app,
    "eval",
    "agentlm.train.eval:main",
    "Compare models: agent success on task files, general MC, chat perplexity.",
)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)
def train(ctx: typer.Context) -> None:
    """Retrain from what users produced: runs train/run.sh with the given arguments (see --help there)."""
    script = Path(str(resources.files("agentlm.train") / "run.sh"))
    bash = shutil.which("bash")
    if bash is None:
        _fail("bash is needed to run train/run.sh")
    env = {**os.environ, "PYTHON": sys.executable}
    sys.exit(subprocess.call([bash, str(script), *ctx.args], env=env))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

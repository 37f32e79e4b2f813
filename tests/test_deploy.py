"""The deployment files against the code they deploy: docker/compose.yaml, the Dockerfiles and their
ignore files, the load balancer's template, docker/train-round.sh and docs/deploy.md. No container
engine runs here, so these read the files: each check fails on a drift that would break a real
deployment (a renamed CLI flag, a package directory an image leaves out, an image tag that floats,
a replica that no longer reaches the shared store, a URL to a service or port that is not there)."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
RUN_SH = ROOT / "train" / "run.sh"
TRAIN_ROUND = DOCKER / "train-round.sh"

PROFILES = {  # service -> its compose profiles (None: always started)
    "postgres": None,
    "lb": None,
    "ui": None,
    "api": ["cpu"],
    "api-gpu": ["gpu"],
    "vllm": ["gpu"],
    "trainer": ["train"],
}
REPLICAS = ("api", "api-gpu")  # scaled with --scale: behind the load balancer, on the shared store
STORE_CLIENTS = (*REPLICAS, "trainer")
GPU_SERVICES = ("vllm", "trainer")
TRAIN_ROUND_COMMAND = "agentlm-train-round"  # docker/train-round.sh in the images: `agentlm train ...`
POSTGRES_PORT = 5432


@functools.cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfiles() -> list[Path]:
    return sorted(p for p in DOCKER.glob("Dockerfile*") if p.suffix != ".dockerignore")


def instructions(dockerfile: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined, comments dropped."""
    text = "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            yield word.upper(), rest.strip()


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} as its default, ${VAR} as a placeholder (what the CLI will parse)."""
    return re.sub(
        r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) if m.group(2) is not None else "x", value
    )


def argv(value: str | list | None) -> list[str]:
    if value is None:
        return []
    return (
        [interpolate(str(v)) for v in value] if isinstance(value, list) else shlex.split(interpolate(value))
    )


def pinned(image: str) -> bool:
    """An exact release: a tag with at least major.minor, not `latest`, no registry-side float."""
    name, sep, tag = image.rpartition(":")
    return bool(sep and "/" not in tag and re.match(r"^v?\d+\.\d+", tag))


# --- what the CLI accepts -----------------------------------------------------------------------


@functools.cache
def cli():
    import typer.main

    from agentlm.cli import app

    return typer.main.get_command(app)


@functools.cache
def run_sh_options() -> frozenset[str]:
    """`agentlm train` forwards its arguments to train/run.sh: the options its usage lists."""
    usage = subprocess.run(["bash", str(RUN_SH), "--help"], capture_output=True, text=True, check=True).stdout
    options = frozenset(re.findall(r"^\s+(--[a-z][a-z-]*)", usage, flags=re.M))
    assert "--base-model" in options, usage
    return options


def train_options_problems(args: list[str]) -> list[str]:
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    return [f"`agentlm train` has no option {flag}" for flag in sorted(flags - run_sh_options())]


def command_problems(args: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Why `agentlm ARGS` would not parse (empty: it would). `agentlm serve`'s values also go
    through ServeSettings, as `agentlm serve` does before it starts."""
    command, name, args = cli(), "agentlm", list(args)
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        if args[0] not in command.commands:
            return [f"`{name}` has no subcommand {args[0]!r}"]
        name, command = f"{name} {args[0]}", command.commands[args.pop(0)]
    if name == "agentlm train":
        return train_options_problems(args)
    try:
        ctx = command.make_context(name, list(args))
    except Exception as e:  # typer ships its own click: its UsageError is not click's
        return [f"`{name} {shlex.join(args)}`: {e}"]
    if name == "agentlm serve":
        from pydantic import ValidationError

        from agentlm.cli import SERVE_OPTIONS
        from agentlm.serve.settings import ServeSettings

        for var in ("AGENTLM_ENGINE", "AGENTLM_STORE_URL", "AGENTLM_STORE", "AGENTLM_MODEL"):
            monkeypatch.delenv(var, raising=False)
        given = {k: v for k, v in ctx.params.items() if k in SERVE_OPTIONS and v is not None}
        try:
            ServeSettings(**given)
        except ValidationError as e:
            return [f"`{name} {shlex.join(args)}`: {e}"]
    return []


def agentlm_calls(tokens: list[str]) -> Iterator[list[str]]:
    """The arguments of each `agentlm SUBCOMMAND ...` in a command line (not `--model agentlm`)."""
    for i, token in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == "agentlm" and not prev.startswith("-") and re.fullmatch(r"[a-z][a-z-]*", nxt):
            rest = tokens[i + 1 :]
            end = next((j for j, t in enumerate(rest) if t in {"&&", "||", ";", "|", ">", "<"}), len(rest))
            yield rest[:end]


def service_command_lines() -> Iterator[tuple[str, list[str]]]:
    for name, service in services().items():
        for key in ("entrypoint", "command"):
            if service.get(key) is not None:
                yield f"{name}.{key}", argv(service[key])
    for dockerfile in dockerfiles():
        for word, rest in instructions(dockerfile):
            if word in {"CMD", "ENTRYPOINT", "RUN"}:
                yield (
                    f"{dockerfile.name} {word}",
                    yaml.safe_load(rest) if rest.startswith("[") else shlex.split(rest),
                )


def image_entrypoint(service: dict) -> list[str]:
    if "entrypoint" in service:
        return argv(service["entrypoint"])
    build = service.get("build")
    if not build:
        return []
    dockerfile = (DOCKER / build["context"] / build["dockerfile"]).resolve()
    entry = [rest for word, rest in instructions(dockerfile) if word == "ENTRYPOINT"]
    return yaml.safe_load(entry[-1]) if entry else []


def bash_lines(markdown: str) -> Iterator[list[str]]:
    """The words of each command in the ```bash blocks (continuations and quoted newlines joined)."""
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            pending = ""
            if words:
                yield words
        assert not pending, f"unbalanced quotes in docs/deploy.md: {pending}"


# --- the services --------------------------------------------------------------------------------


def test_the_services_and_their_profiles():
    assert {name: service.get("profiles") for name, service in services().items()} == PROFILES


def test_every_build_has_its_dockerfile_and_every_dockerfile_is_built():
    built = set()
    for name, service in services().items():
        if "build" in service:
            dockerfile = (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
            assert dockerfile.is_file(), f"{name}: no {dockerfile}"
            built.add(dockerfile)
    assert built == {p.resolve() for p in dockerfiles()}, "a Dockerfile no service builds is dead weight"


def test_every_image_is_pinned_and_built_images_carry_the_project_version():
    version = pyproject()["project"]["version"]
    for name, service in services().items():
        image = service.get("image")
        assert image, f"{name}: name the image (built ones too), so replicas and `run` share it"
        assert pinned(image), f"{name}: {image} is not an exact release"
        if "build" in service:
            assert image.rpartition(":")[2] == version, f"{name}: {image} is not tagged {version}"


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_every_base_image_is_pinned(dockerfile):
    stages: set[str] = set()
    bases = []
    for word, rest in instructions(dockerfile):
        if word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            bases.append(parts[0])
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
    assert bases, f"{dockerfile.name}: no FROM"
    for base in bases:
        assert base in stages or pinned(base), f"{dockerfile.name}: FROM {base} is not an exact release"


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_every_image_copies_every_package_directory_and_its_ignore_file_lets_them_through(dockerfile):
    package_dirs = set(pyproject()["tool"]["setuptools"]["package-dir"].values())
    sources: set[str] = set()
    for word, rest in instructions(dockerfile):
        if word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            if not any(a.startswith("--from") for a in shlex.split(rest)):
                sources.update(a.rstrip("/") for a in args[:-1])
    assert package_dirs <= sources, f"{dockerfile.name} does not COPY {sorted(package_dirs - sources)}"

    # The build context is the whole repository (virtualenvs, runs/: gigabytes): each Dockerfile has
    # its own ignore file, and it must not drop what the Dockerfile copies.
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), f"no {ignore.name}: the build would send the whole repository"
    patterns = [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for source in sorted(sources):
        excluded = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch(source, pattern.lstrip("!")):
                excluded = not negated
        assert not excluded, f"{ignore.name} leaves out {source}, which {dockerfile.name} copies"


def test_the_replicas_and_the_trainer_share_the_postgres_store(monkeypatch, tmp_path):
    postgres = services()["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?"), "the password must be required"
    urls = set()
    for name in STORE_CLIENTS:
        service = services()[name]
        url = urlsplit(service["environment"]["AGENTLM_STORE_URL"])
        assert url.scheme == "postgresql", name
        assert url.hostname == "postgres" and url.port == POSTGRES_PORT, f"{name}: {url.netloc}"
        assert url.username == postgres["POSTGRES_USER"], name
        assert url.password == "${POSTGRES_PASSWORD}", name
        assert url.path == "/" + postgres["POSTGRES_DB"], name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        urls.add(url.geturl())

    # ... and the store URL reaches the setting the server reads it from.
    from agentlm.serve.settings import ServeSettings

    monkeypatch.setenv("AGENTLM_HOME", str(tmp_path))
    monkeypatch.delenv("AGENTLM_STORE", raising=False)
    for url in urls:
        monkeypatch.setenv("AGENTLM_STORE_URL", url)
        assert str(ServeSettings().store) == url


def test_the_trainer_exports_from_the_store_url(tmp_path):
    """train/run.sh's first step exports from the store the trainer's AGENTLM_STORE_URL names, not
    from a SQLite file that a container never has. A stub python records what run.sh asks of it."""
    log = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\ncase "$1" in -c) echo {tmp_path} ;; esac\n')
    stub.chmod(0o755)
    url = "postgresql://agentlm:secret@postgres:5432/agentlm"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHON": str(stub),
        "AGENTLM_HOME": str(tmp_path / "home"),
        "AGENTLM_STORE_URL": url,
    }
    done = subprocess.run(
        ["bash", str(RUN_SH), "--base-model", "base", "--output", str(tmp_path / "out"), "--dry-run"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    exports = [call for call in log.read_text().splitlines() if "agentlm.cli data export" in call]
    assert exports, f"run.sh never exported from {url}:\n{done.stdout}"
    assert all(url in call or "--store" not in call for call in exports), exports


def test_replicas_publish_no_port_and_keep_the_sandbox_lines():
    for name in REPLICAS:
        service = services()[name]
        assert "ports" not in service, f"{name}: a host port stops `--scale`; `lb` is the way in"
        assert {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"} <= set(
            service["security_opt"]
        ), f"{name}: bubblewrap (the shell tool) needs user namespaces"
        assert "agentlm-api" in service["networks"]["default"]["aliases"], f"{name}: lb would not find it"


def test_the_gpu_services_reserve_the_gpus():
    for name in GPU_SERVICES:
        devices = services()[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] for d in devices), name


# --- commands and addresses ----------------------------------------------------------------------


def test_every_agentlm_command_in_compose_and_the_dockerfiles_parses(monkeypatch):
    problems, seen = [], 0
    for where, tokens in service_command_lines():
        for call in agentlm_calls(tokens):
            seen += 1
            problems += [f"{where}: {p}" for p in command_problems(call, monkeypatch)]
    assert seen >= 4, "found too few agentlm commands: the parser above missed them"
    assert not problems, "\n".join(problems)


def test_the_trainers_arguments_are_agentlm_train_options():
    trainer = services()["trainer"]
    assert image_entrypoint(trainer) == [TRAIN_ROUND_COMMAND]
    assert not train_options_problems(argv(trainer.get("command")))
    script = "\n".join(
        line for line in TRAIN_ROUND.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    assert re.search(r"\bexec agentlm train\b", script)
    flags = re.findall(r"(?<![\w-])--[a-z][a-z-]*", script)
    assert flags and not train_options_problems(flags)
    for dockerfile in dockerfiles():
        copies = [
            [a for a in rest.split() if not a.startswith("--")]
            for word, rest in instructions(dockerfile)
            if word == "COPY" and "train-round.sh" in rest
        ]
        assert copies == [
            [TRAIN_ROUND.relative_to(ROOT).as_posix(), f"/usr/local/bin/{TRAIN_ROUND_COMMAND}"]
        ], dockerfile.name


def test_every_agentlm_command_in_the_deployment_guide_parses(monkeypatch):
    problems, seen = [], 0
    value_options = {"-v", "--volume", "-e", "--env", "--entrypoint", "--name", "-w", "--workdir", "-u", "--user",
                     "-p", "--publish", "-l", "--label", "--scale", "--env-file", "--profile", "-f", "--file"}  # fmt: skip
    for tokens in bash_lines(DEPLOY_DOC.read_text()):
        line = shlex.join(tokens)
        for call in agentlm_calls(tokens):
            seen += 1
            problems += [f"{line}\n  {p}" for p in command_problems(call, monkeypatch)]
        # `docker compose run [options] SERVICE ARGS`: a round's ARGS are `agentlm train` options.
        if tokens[:2] == ["docker", "compose"] and "run" in tokens:
            rest, entrypoint = tokens[tokens.index("run") + 1 :], None
            while rest and rest[0].startswith("-"):
                option = rest.pop(0)
                if option in value_options:
                    value = rest.pop(0)
                    entrypoint = value if option == "--entrypoint" else entrypoint
            service, args = rest[0], rest[1:]
            image_entry = [entrypoint] if entrypoint else image_entrypoint(services()[service])
            if image_entry == [TRAIN_ROUND_COMMAND]:
                seen += 1
                problems += [f"{line}\n  {p}" for p in train_options_problems(args)]
        for i, token in enumerate(tokens):
            if token.endswith("train/run.sh"):
                seen += 1
                problems += [f"{line}\n  {p}" for p in train_options_problems(tokens[i + 1 :])]
    assert seen >= 4, "found too few agentlm commands in docs/deploy.md: the parser above missed them"
    assert not problems, "\n\n".join(problems)


def test_the_guide_names_the_images_compose_runs():
    doc = DEPLOY_DOC.read_text()
    images = {service["image"] for service in services().values()}
    for image in images:
        assert image in doc, f"docs/deploy.md does not mention {image}"
    for named in re.findall(
        r"(?<![@/\w.-])((?:postgres|nginx|vllm/vllm-openai|agentlm|agentlm-train):v?\d[\w.-]*)", doc
    ):
        assert named in images, f"docs/deploy.md names {named}; compose runs {sorted(images)}"


def listening_port(name: str) -> int:
    if name == "postgres":
        return POSTGRES_PORT
    if name == "lb":
        template = (DOCKER / "nginx.conf.template").read_text()
        return int(re.search(r"^\s*listen\s+(\d+);", template, flags=re.M).group(1))
    tokens = argv(services()[name].get("command"))
    return int(tokens[tokens.index("--port") + 1])


def names() -> dict[str, list[str]]:
    """Each name on the compose network -> the services that answer to it."""
    answer: dict[str, list[str]] = {name: [name] for name in services()}
    for name, service in services().items():
        for alias in ((service.get("networks") or {}).get("default") or {}).get("aliases", []):
            answer.setdefault(alias, []).append(name)
    return answer


def strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def test_every_address_names_a_service_and_the_port_it_listens_on():
    checked = 0
    for name, service in services().items():
        for text in strings(
            {k: v for k, v in service.items() if k in ("command", "environment", "healthcheck")}
        ):
            for host, port in re.findall(r"\b(?:https?|postgresql)://(?:[^@/\s]*@)?([\w.-]+):(\d+)", text):
                targets = [name] if host in ("127.0.0.1", "localhost") else names().get(host)
                assert targets, f"{name}: {text} names {host}, which is no service"
                for target in targets:
                    assert int(port) == listening_port(target), f"{name}: {text}: {target} listens elsewhere"
                checked += 1
        for mapping in service.get("ports", []):
            container_port = int(str(mapping).rsplit(":", 1)[-1])
            assert container_port == listening_port(name), f"{name} publishes {mapping}"
    template = (DOCKER / "nginx.conf.template").read_text()
    for host, port in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", template, flags=re.M):
        assert set(names().get(host, [])) == set(REPLICAS), f"lb's upstream {host} is not the API replicas"
        assert all(int(port) == listening_port(r) for r in REPLICAS), f"lb sends to port {port}"
        checked += 1
    assert checked >= 8

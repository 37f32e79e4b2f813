"""Command-line options made from a settings model, so a setting is declared once.

A pydantic (or pydantic-settings) model holds each setting's name, type, bounds, default and
description; ``options_from`` turns the fields a command exposes into typer options with those
names (``max_batch_size`` -> ``--max-batch-size``), types and help. An option left out on the
command line stays out of the values handed to the model, so its default, or for settings its
``AGENTLM_*`` environment variable, applies. ``invalid`` words a validation error in the
options' own names.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

Command = TypeVar("Command", bound=Callable[..., Any])
Settings = TypeVar("Settings", bound=BaseModel)
_SCALARS = (str, int, float, bool, Path)


def options_from(
    model: type[BaseModel], names: Iterable[str], flags: dict[str, Sequence[str]] | None = None
) -> Callable[[Command], Command]:
    """Add an option for each named field of `model` to the decorated command, after its own
    parameters. The command takes them as ``**options``: only those given, by field name. An
    option is ``--field-name`` unless `flags` names it otherwise (``{"n": ("-n", "--n")}``)."""
    names = list(names)
    flags = flags or {}

    def bind(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)  # typer reads these, not strings
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [_option(model, name, flags.get(name, ())) for name in names]

        def given(*args: Any, **kwargs: Any) -> Any:
            options = {name: value for name in names if (value := kwargs.pop(name, None)) is not None}
            return command(*args, **kwargs, **options)

        given.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
        given.__name__, given.__doc__ = command.__name__, command.__doc__
        return given  # type: ignore[return-value]

    return bind


def _option(model: type[BaseModel], name: str, flags: Sequence[str]) -> inspect.Parameter:
    field = model.model_fields[name]
    kind, choices = option_type(field.annotation)
    help_text = field.description or ""
    if field.is_required():
        help_text = "Required. " + help_text
    if choices:
        help_text += f" One of: {', '.join(choices)}."
    if field.default not in (PydanticUndefined, None, "") and not isinstance(field.default, list | dict):
        help_text += f" (default: {field.default})"
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, typer.Option(*flags, help=help_text.strip(), show_default=False)],
    )


def option_type(annotation: Any) -> tuple[Any, list[str]]:
    """The type typer parses a field into, and the choices of a Literal field."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return option_type(inner[0])
    if origin is Literal:
        choices = [str(c) for c in get_args(annotation)]
        return str, choices
    if origin is list and get_args(annotation)[0] in _SCALARS:
        return list[get_args(annotation)[0]], []  # type: ignore[misc]
    if annotation in _SCALARS:
        return annotation, []
    raise TypeError(f"a setting of type {annotation!r} has no command-line option; leave it out")


def settings_of(model: type[Settings], options: dict[str, Any], prog: str) -> Settings:
    """`model` made from the options given, or, when they do not fit it, the problems named by
    option on stderr and exit status 2 (a usage error, as typer's own checks exit)."""
    try:
        return model(**options)
    except ValidationError as e:
        typer.echo(f"{prog}: {invalid(e)}", err=True)
        raise typer.Exit(2) from None


def invalid(error: ValidationError) -> str:
    """A validation error in the options' words: "--port: must be at most 65535; ..."."""
    return "; ".join(
        "--" + "-".join(map(str, e["loc"])).replace("_", "-") + ": " + e["msg"] for e in error.errors()
    )


def invoke(command: Callable[..., Any], argv: list[str] | None, prog_name: str) -> None:
    """Run a typer command function as a program's whole command line (``main(argv)`` of a module).
    An option that takes a list also reads several values after one flag (``--data a.jsonl
    b.jsonl``, as argparse's ``nargs="+"`` did), besides the flag repeated."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=spread(args, _list_flags(command)), prog_name=prog_name)
    except SystemExit as done:  # click ends every run with one; a caller of main() gets a return
        if done.code not in (0, None):
            raise


def spread(args: list[str], flags: set[str]) -> list[str]:
    """``--flag a b`` as ``--flag a --flag b`` for the given list options."""
    out: list[str] = []
    flag = None
    for arg in args:
        if arg.startswith("-"):
            flag = arg if arg in flags else None
            out.append(arg)
        elif flag is not None and out[-1] != flag:
            out += [flag, arg]
        else:
            out.append(arg)
    return out


def _list_flags(command: Callable[..., Any]) -> set[str]:
    """The flags of the command's options that take a list."""
    flags = set()
    for param in inspect.signature(command).parameters.values():
        if get_origin(param.annotation) is not Annotated:
            continue
        kind, *extras = get_args(param.annotation)
        info = next((e for e in extras if isinstance(e, typer.models.OptionInfo)), None)
        if info is None or option_type(kind)[0] not in (list[str], list[int], list[float], list[Path]):
            continue
        # typer.Option("--set") inside Annotated keeps its first declaration as `default`.
        decls = [info.default, *(info.param_decls or ())]
        declared = [d for d in decls if isinstance(d, str) and d.startswith("--")]
        flags.update(declared or ["--" + param.name.replace("_", "-")])
    return flags

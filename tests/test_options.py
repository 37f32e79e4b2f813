"""Command-line options made from a settings model: one declaration, the environment still applies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.testing import CliRunner

from agentlm.options import invalid, invoke, option_type, options_from, settings_of, spread


class Knobs(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KNOB_")

    size: int = Field(default=3, ge=1, description="How big.")
    mode: Literal["fast", "slow"] = Field(default="fast", description="How to go.")
    names: list[str] = Field(default_factory=list, description="Who comes.")
    out: Path | None = Field(default=None, description="Where to write.")


app = typer.Typer()


@app.command()
@options_from(Knobs, ["size", "mode", "names", "out"], flags={"out": ("-o", "--out")})
def show(loud: bool = False, **options: Any) -> None:
    try:
        knobs = Knobs(**options)
    except ValidationError as e:
        typer.echo(invalid(e))
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"loud": loud, "given": sorted(options), **knobs.model_dump(mode="json")}))


def run(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_options_left_out_leave_the_defaults_and_the_environment() -> None:
    assert run() == {"loud": False, "given": [], "size": 3, "mode": "fast", "names": [], "out": None}
    assert run(env={"KNOB_SIZE": "5"})["size"] == 5
    assert run("--size", "7", env={"KNOB_SIZE": "5"})["size"] == 7  # the command line wins


def test_options_take_the_fields_types() -> None:
    values = run("--loud", "--mode", "slow", "--names", "a", "--names", "b", "--out", "x/y.json")
    assert values["loud"] is True and values["given"] == ["mode", "names", "out"]
    assert (values["mode"], values["names"], values["out"]) == ("slow", ["a", "b"], "x/y.json")
    assert run("-o", "z.json")["out"] == "z.json"  # a field given its own flags


def test_a_bad_value_is_named_by_its_option() -> None:
    result = CliRunner().invoke(app, ["--size", "0"])
    assert result.exit_code == 2 and result.output.startswith(
        "--size: Input should be greater than or equal to 1"
    )
    result = CliRunner().invoke(app, ["--mode", "sideways"])
    assert result.exit_code == 2 and "--mode: Input should be 'fast' or 'slow'" in result.output
    result = CliRunner().invoke(app, ["--size", "many"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Invalid value for '--size'" in result.output  # typer's own check


def test_help_is_the_fields_descriptions() -> None:
    text = " ".join(CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output.split())
    assert "How big. (default: 3)" in text and "How to go. One of: fast, slow." in text
    assert "--names" in text and "--out" in text


def test_a_field_without_a_command_line_form_is_refused() -> None:
    assert option_type(int | None) == (int, [])
    with pytest.raises(TypeError, match="no command-line option"):
        option_type(dict[str, str])


def test_a_list_option_reads_several_values_after_one_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert spread(["--names", "a", "b", "--size", "2", "c"], {"--names"}) == [
        "--names", "a", "--names", "b", "--size", "2", "c",
    ]  # fmt: skip
    invoke(show, ["--names", "a", "b", "--names", "c", "--size", "2"], "show")
    values = json.loads(capsys.readouterr().out)
    assert values["names"] == ["a", "b", "c"] and values["size"] == 2


def test_settings_that_do_not_fit_exit_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert settings_of(Knobs, {"size": 4}, "knobs").size == 4
    with pytest.raises(typer.Exit) as done:
        settings_of(Knobs, {"size": 0, "mode": "sideways"}, "knobs")
    assert done.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "knobs: --size: Input should be greater than or equal to 1; --mode: Input should be"
    )

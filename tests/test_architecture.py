"""The architecture holds: imports go one way (pyproject.toml's import-linter contracts) and no
module grows past what a reader takes in at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LONGEST_MODULE = 600  # lines; docs/architecture.md says why a module nears it


def _parts() -> dict[str, Path]:
    """Each package's folder, from pyproject.toml's package-dir (agentlm.agent -> agent/, ...)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def _installed_layout(target: Path) -> Path:
    """The package's sources copied as they install (agentlm/agent/...), for lint-imports, which
    looks for subpackages inside the root package's folder."""
    for name, folder in _parts().items():
        for source in folder.rglob("*.py"):
            if "__pycache__" in source.parts:
                continue
            copy = target.joinpath(*name.split("."), source.relative_to(folder))
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    return target


def _lint_imports(sources: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(ROOT / "pyproject.toml")],
        cwd=sources,
        env={**os.environ, "PYTHONPATH": str(sources)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_imports_go_one_way(tmp_path: Path) -> None:
    result = _lint_imports(_installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "imports", "broken"),
    [
        (
            "agentlm/agent/upward.py",
            "agentlm.serve.store",
            "agentlm.agent is not allowed to import agentlm.serve",
        ),
        (
            "agentlm/ui/inside.py",
            "agentlm.agent.trajectory",
            "agentlm.ui is not allowed to import agentlm.agent",
        ),
    ],
)
def test_an_import_against_the_direction_is_caught(
    tmp_path: Path, module: str, imports: str, broken: str
) -> None:
    sources = _installed_layout(tmp_path)
    (sources / module).write_text(f"import {imports}\n")
    result = _lint_imports(sources)
    assert result.returncode != 0
    assert broken in result.stdout


def test_no_module_is_longer_than_a_reader_takes_in() -> None:
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for folder in _parts().values()
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert len(lengths) > 50
    assert {path: n for path, n in lengths.items() if n > LONGEST_MODULE} == {}

"""A tiny model checkpoint and a real AgentLM server on it (uvicorn on 127.0.0.1, in a thread)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
from localhttp import bound_socket, run_asgi
from tiny import build_tiny_gemma, build_tiny_model

from agentlm.data.formats import read_jsonl
from agentlm.serve.app import create_app
from agentlm.serve.settings import ServeSettings


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama whose tokenizer learnt the bundled data's vocabulary (seconds to build)."""
    bundled = resources.files("agentlm.data") / "bundled"
    corpus = [
        turn.content
        for name in ("hr_trajectories.jsonl", "general_chat.jsonl")
        for conv in read_jsonl(Path(str(bundled / name)))
        for turn in conv.turns
    ]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", corpus)


@pytest.fixture
def tiny_gemma():
    """A random two-layer Gemma 3 with a 4-token sliding window (built fresh for each test)."""
    return build_tiny_gemma()


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    settings: ServeSettings
    model_id: str

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture(scope="module")
def server(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, agentlm_home: Path
) -> Iterator[LiveServer]:
    settings = ServeSettings(model=str(tiny_checkpoint), store=tmp_path_factory.mktemp("store") / "t.sqlite3")
    app = create_app(settings)
    sock = bound_socket()
    with run_asgi(app, sock):
        port = sock.getsockname()[1]
        yield LiveServer(f"http://127.0.0.1:{port}", settings, app.state.serving.engine.model_id)

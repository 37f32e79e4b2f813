"""A tiny model checkpoint and a real AgentLM server on it (uvicorn on 127.0.0.1, in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
import uvicorn
from tiny import build_tiny_model

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
    # Bind first and hand uvicorn the socket: no race for a "free" port.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield LiveServer(f"http://127.0.0.1:{port}", settings, app.state.serving.engine.model_id)
    srv.should_exit = True
    thread.join(timeout=30)
    sock.close()

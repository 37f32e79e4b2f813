"""A real HTTP server on 127.0.0.1 for tests: a handler class in, its base URL out.

    with serve(MyHandler) as base:          # "http://127.0.0.1:PORT"
        ...

Handlers subclass ``Handler``: quiet logs and ``send(status, body, content_type, **headers)``.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    def send(
        self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", **headers: str
    ) -> None:
        """One whole response; header names are given with underscores (``content_encoding=``)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn, a DNS lookup: tests stay off the network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `handler` until the block ends; yields the base URL (https with a server `tls` context)."""
    server = _Server(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def bound_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1: bind first, then serve, so no race for the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def run_asgi(app: Any, sock: socket.socket) -> Iterator[None]:
    """Serve an ASGI app with uvicorn on `sock` in a thread, until the block ends."""
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        sock.close()

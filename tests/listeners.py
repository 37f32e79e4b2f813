"""Host sockets that count what reaches them: the judges of the sandbox escape suites."""

from __future__ import annotations

import socket
import threading


class Listener:
    """A host socket that counts what reaches it (TCP accepts, UDP datagrams, unix connects)."""

    def __init__(self, family: int, kind: int, address: object):
        self.sock = socket.socket(family, kind)
        self.sock.bind(address)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.hits = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, args=(kind,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _serve(self, kind: int) -> None:
        while not self._stop:
            try:
                if kind == socket.SOCK_STREAM:
                    conn, _ = self.sock.accept()
                    conn.close()
                else:
                    self.sock.recv(4096)
                self.hits += 1
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()

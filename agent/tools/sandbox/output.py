"""Reading a command's merged stdout and stderr: at most a cap kept, the rest read and dropped (so a
noisy command never blocks the shell nor fills the host's memory), up to the sentinel line a
session's shell prints after each command.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import time


class CappedOutput:
    """The output stream of one command: keeps the first `cap` bytes, counts the rest, finds the sentinel."""

    def __init__(self, cap: int, marker: bytes | None):
        self.cap = cap
        self.kept = bytearray()
        self.total = 0
        self.status: int | None = None
        self.rest = b""  # bytes after the sentinel (a background job's output): the next command's
        self._tail = b""
        self._sentinel = re.compile(rb"\n" + re.escape(marker) + rb"(-?\d+)\n") if marker else None
        self._tail_len = len(marker) + 32 if marker else 0

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; True once the sentinel was seen (the command finished)."""
        if self._sentinel is not None:
            start = self.total - len(self._tail)
            window = self._tail + chunk
            found = self._sentinel.search(window)
            if found:
                end = start + found.start()  # where the command's own output ends in the stream
                self._keep(chunk[: max(0, end - self.total)])
                del self.kept[end:]
                self.total = end
                self.status = int(found.group(1))
                self.rest = window[found.end() :]
                return True
            self._tail = window[-self._tail_len :]
        self._keep(chunk)
        self.total += len(chunk)
        return False

    def _keep(self, chunk: bytes) -> None:
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    def text(self) -> str:
        return bytes(self.kept).decode("utf-8", errors="replace")


def pump(
    out_fd: int,
    in_fd: int | None,
    data: bytes,
    capped: CappedOutput,
    deadline: float,
    exit_fd: int | None = None,
) -> tuple[bool, bool]:
    """Write `data` to in_fd and read out_fd into `capped` until the sentinel, EOF or the deadline,
    or until `exit_fd` (a pidfd) says the process exited: then what it wrote is read, and a
    background job it left holding the pipe is not waited for (``docker exec``'s end).

    Returns (eof, timed_out). Writes are non-blocking and interleaved with reads, so a shell busy
    printing never deadlocks against a long command still being written.
    """
    poller = select.poll()
    poller.register(out_fd, select.POLLIN)
    if exit_fd is not None:
        poller.register(exit_fd, select.POLLIN)
    if in_fd is not None and data:
        os.set_blocking(in_fd, False)
        poller.register(in_fd, select.POLLOUT)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, True
        for fd, event in poller.poll(min(remaining, 1.0) * 1000):
            if fd == exit_fd:  # what is in the pipe now; a background job writing on is not waited for
                os.set_blocking(out_fd, False)
                with contextlib.suppress(BlockingIOError):
                    while time.monotonic() < deadline and (chunk := os.read(out_fd, 65536)):
                        if capped.feed(chunk):
                            break
                return True, False
            if fd == out_fd:
                chunk = os.read(out_fd, 65536)
                if not chunk:
                    return True, False
                if capped.feed(chunk):
                    return False, False
            elif fd == in_fd:
                if event & (select.POLLERR | select.POLLHUP):
                    poller.unregister(in_fd)  # the shell is gone; its EOF on out_fd follows
                    continue
                try:
                    written = os.write(in_fd, data[:65536])
                except BrokenPipeError:
                    poller.unregister(in_fd)
                    continue
                except BlockingIOError:
                    continue
                data = data[written:]
                if not data:
                    poller.unregister(in_fd)

"""Waiting in tests without fixed sleeps: poll a condition until it holds or a deadline passes.

    value = eventually(lambda: read() or None, timeout=10, what="the log to appear")

A loaded machine makes things slower, never wrong: a test that polls with a generous deadline
passes as soon as the condition holds, and fails with what it was waiting for when it never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """The first truthy value `check()` returns, polling every `interval` s for up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what or check}; last value {value!r}")
        time.sleep(interval)

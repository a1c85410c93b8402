"""One background event loop per process, owning every asyncssh connection of that process.

Callers (Dagster steps, Pipes reader threads) stay blocking: they hand a coroutine to this loop
and wait for its result. After a fork the child gets a fresh loop (the parent's thread does not
exist there), so connections are never shared across processes by accident.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from dagster_hpc.errors import TransportError

T = TypeVar("T")

# Extra time the calling thread waits beyond a coroutine's own timeout, so the coroutine's
# clear timeout error (which names the command) wins over a bare "future timed out".
CALL_MARGIN_S = 5.0

LOOP_THREAD_NAME = "dagster-hpc-ssh"

_lock = threading.Lock()
_state: tuple[int, asyncio.AbstractEventLoop] | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's SSH event loop (started on first use, in a daemon thread)."""
    global _state
    with _lock:
        if _state is None or _state[0] != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=LOOP_THREAD_NAME, daemon=True)
            thread.start()
            _state = (os.getpid(), loop)
        return _state[1]


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the SSH loop and block until it finishes (thread-safe)."""
    loop = get_loop()
    if _on_loop(loop):
        coro.close()
        raise RuntimeError(
            "a blocking SSH call was made from the SSH event loop itself (e.g. inside an otp_callback): "
            "it would wait forever; call the transport from another thread"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(None if timeout is None else timeout + CALL_MARGIN_S)
    except concurrent.futures.TimeoutError as exc:
        future.cancel()
        raise TransportError(
            f"no answer within {timeout} s (+{CALL_MARGIN_S} s margin) from the SSH connection; "
            "hint: the login node may be hanging, retry later or raise the timeout"
        ) from exc

"""Progress of long work (environment builds and uploads): a bar in the CLI, a percent line
in Dagster's log.

The code doing the work calls ``report(what, done, total, unit)`` on the reporter installed for
the current thread with ``reporting(...)`` (a context variable), so transports and builders
need no new parameters: ``resolve_env`` installs a ``LogProgress`` (Dagster's log), the
``dagster-hpc env`` commands a ``BarProgress`` (stderr).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

# A percent line in Dagster's log at most every 10 s per task: a 90 MB upload over a slow link
# shows that it moves, without a log event per SFTP chunk.
PROGRESS_LOG_INTERVAL_S = 10.0
# The CLI bar redraws at most 10 times a second (a terminal cannot show more).
PROGRESS_BAR_INTERVAL_S = 0.1
BAR_WIDTH = 30
MB = 1024 * 1024


class Reporter(Protocol):
    def __call__(self, what: str, done: int, total: int, unit: str = "bytes") -> None: ...


_current: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar(
    "dagster_hpc_progress", default=None
)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    token = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Reporter | None:
    return _current.get()


def report(what: str, done: int, total: int, unit: str = "bytes") -> None:
    """Tell the installed reporter, if any (a no-op otherwise)."""
    reporter = _current.get()
    if reporter is not None:
        reporter(what, done, total, unit)


def _amount(done: int, total: int, unit: str) -> str:
    if unit == "bytes":
        return f"{done / MB:.1f} of {total / MB:.1f} MB"
    return f"{done} of {total} {unit}"


def _pct(done: int, total: int) -> int:
    return 100 if total <= 0 else min(100, int(100 * done / total))


class LogProgress:
    """``what: 45% (41.0 of 93.0 MB)`` lines: the first, then at most one per interval, and the last."""

    def __init__(
        self,
        log: Callable[[str], None],
        *,
        interval_s: float = PROGRESS_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._log, self._interval, self._clock = log, interval_s, clock
        self._last: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int, unit: str = "bytes") -> None:
        now = self._clock()
        finished = done >= total
        last = self._last.get(what)
        if last is not None and not finished and now - last < self._interval:
            return
        self._last[what] = now
        self._log(f"{what}: {_pct(done, total)}% ({_amount(done, total, unit)})")
        if finished:
            self._last.pop(what, None)


class BarProgress:
    """``what [#########.........]  30% 28.0 of 93.0 MB`` redrawn in place on a terminal."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval_s: float = PROGRESS_BAR_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._stream = stream or sys.stderr
        self._interval, self._clock = interval_s, clock
        self._last = 0.0
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())

    def __call__(self, what: str, done: int, total: int, unit: str = "bytes") -> None:
        now = self._clock()
        finished = done >= total
        if not finished and now - self._last < self._interval:
            return
        self._last = now
        pct = _pct(done, total)
        filled = BAR_WIDTH * pct // 100
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        line = f"{what} [{bar}] {pct:3d}% {_amount(done, total, unit)}"
        if self._tty:
            self._stream.write("\r" + line + ("\n" if finished else ""))
        elif finished or done == 0:
            self._stream.write(line + "\n")  # a log file gets the start and the end only
        self._stream.flush()


def bound(what: str, total: int, unit: str = "bytes") -> Callable[[int], None]:
    """``report(done)`` for one task, bound to the reporter of the CALLING thread (for work that
    runs on another thread or event loop, where the context variable is not set)."""
    reporter = _current.get()
    if reporter is None:
        return lambda _done: None
    return lambda done: reporter(what, done, total, unit)

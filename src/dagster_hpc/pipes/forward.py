"""Payload output -> Dagster log events, one event per line unless the payload floods.

A Dagster log event costs about half a millisecond (and a row in the event log), so a payload
printing thousands of lines per second would make Dagster, not the payload, the bottleneck.
Below MAX_LOG_EVENTS_PER_S every line is its own event; above it, the lines of a read are
grouped, up to LOG_LINES_PER_EVENT per event, in order. Nothing is dropped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# Events per second (sliding one-second window) before lines are grouped.
MAX_LOG_EVENTS_PER_S = 50
LOG_LINES_PER_EVENT = 200
_WINDOW_S = 1.0
STDERR_PREFIX = "[stderr] "


class LogForwarder:
    """The reader's line sink: ``forwarder(stream, lines)``; thread-confined to the tail thread."""

    def __init__(
        self, log_info: Callable[[str], None], *, clock: Callable[[], float] = time.monotonic
    ):
        self._log_info = log_info
        self._clock = clock
        self._recent: deque[float] = deque()  # when recent events were emitted
        self.events = 0

    def __call__(self, stream: str, lines: list[str]) -> None:
        prefix = "" if stream == "stdout" else STDERR_PREFIX
        now = self._clock()
        while self._recent and now - self._recent[0] > _WINDOW_S:
            self._recent.popleft()
        if len(lines) <= MAX_LOG_EVENTS_PER_S - len(self._recent):
            for line in lines:
                self._emit(prefix + line, now)
            return
        for start in range(0, len(lines), LOG_LINES_PER_EVENT):
            self._emit(
                "\n".join(prefix + line for line in lines[start : start + LOG_LINES_PER_EVENT]), now
            )

    def _emit(self, text: str, now: float) -> None:
        self._log_info(text)
        self._recent.append(now)
        self.events += 1

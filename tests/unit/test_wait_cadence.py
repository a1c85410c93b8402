"""The wait for a job's end asks the scheduler rarely once the job runs: the Pipes reader sees a
normal end by itself (the exit_code file), the query only catches a job that dies without one.
A pending job is asked about every tick (its reason and start are logged)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from dagster_hpc import execution
from dagster_hpc.backends.base import JobHandle, JobState, JobStatus


@dataclass
class FakeBackend:
    state: JobState
    name: str = "fake"
    poll_interval_s: float = 0.005
    first_poll_after_s: float = 0.0
    running_poll_interval_s: float = 0.2
    exit_file_grace_s: float = 5.0
    polls: list[float] = field(default_factory=list)

    def poll(self, handle: JobHandle) -> JobStatus:
        self.polls.append(time.monotonic())
        return JobStatus(self.state)


class FakeReader:
    def __init__(self, after_s: float) -> None:
        self.exited = threading.Event()
        self.exit_code: int | None = 0
        self.error = None
        self.progress_at = time.monotonic()
        threading.Timer(after_s, self.exited.set).start()


class Log:
    def info(self, _m: str) -> None: ...
    def warning(self, _m: str) -> None: ...


class Context:
    log = Log()


def _polls(state: JobState, after_s: float = 0.5) -> int:
    backend = FakeBackend(state)
    code = execution._wait(
        Context(), backend, JobHandle("fake", "1", "/r", "c"), FakeReader(after_s)
    )
    assert code == 0
    return len(backend.polls)


def test_a_running_job_is_asked_about_once_per_running_interval() -> None:
    assert 2 <= _polls(JobState.RUNNING) <= 4  # 0, 0.2, 0.4 s: not one per 5 ms tick


def test_a_pending_job_is_asked_about_every_tick() -> None:
    assert _polls(JobState.PENDING) > 20

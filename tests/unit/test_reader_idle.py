"""The Pipes reader's idle cost, on an injected clock: reads per simulated hour of a silent job."""

from __future__ import annotations

import threading
from pathlib import Path

from dagster_hpc.pipes import reader as reader_mod
from dagster_hpc.pipes.reader import RunDirMessageReader
from dagster_hpc.transport.local import LocalTransport
from dagster_hpc.transport.watch import WatchResult

HOUR_S = 3600.0
JOIN_TIMEOUT_S = 60


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SilentWaitingTransport(LocalTransport):
    """A login node that waits the whole window (nothing ever changes), on the fake clock."""

    def __init__(self, clock: FakeClock, until_s: float) -> None:
        super().__init__()
        self.clock, self.until_s = clock, until_s
        self.windows: list[float] = []
        self.done = threading.Event()

    def watch_files(self, exit_path, tails, *, window_s, check_s, check_max_s, **kw):
        if self.clock.now < self.until_s:
            self.windows.append(window_s)
            self.clock.now += window_s
        else:
            self.done.set()
        return WatchResult(b"", [b""] * len(tails), waited=True, next_check_s=check_max_s)


def test_silent_job_costs_one_round_trip_per_window_backing_off_to_the_max(tmp_path: Path):
    clock = FakeClock()
    transport = SilentWaitingTransport(clock, HOUR_S)
    reader = RunDirMessageReader(transport, str(tmp_path), lambda s, lines: None, clock=clock)
    with reader.read_messages(handler=None):  # type: ignore[arg-type]  # no messages
        assert transport.done.wait(JOIN_TIMEOUT_S)
    windows = transport.windows
    # 10, 20, then the named maximum: ~120 reads for an hour of silence (24 h: ~2,900)
    assert windows[:3] == [10.0, 20.0, 30.0]
    assert set(windows[2:]) == {reader_mod.WATCH_WINDOW_MAX_S}
    expected = 2 + (HOUR_S - 30.0) / reader_mod.WATCH_WINDOW_MAX_S
    assert len(windows) <= expected + 1, len(windows)
    print(f"silent job, waiting transport: {len(windows)} reads in a simulated hour")


class SilentLocal(LocalTransport):
    """A transport that does not wait: the reader sleeps (fake) between reads."""

    def __init__(self, clock: FakeClock, until_s: float) -> None:
        super().__init__()
        self.clock, self.until_s = clock, until_s
        self.reads = 0
        self.done = threading.Event()

    def read_many_from(self, requests, *, max_bytes=4 << 20):
        if self.clock.now < self.until_s:
            self.reads += 1
        else:
            self.done.set()
        return [b""] * len(requests)


def test_silent_job_on_a_transport_that_does_not_wait_backs_off_to_the_idle_interval(
    tmp_path: Path,
):
    clock = FakeClock()
    transport = SilentLocal(clock, HOUR_S)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    reader = RunDirMessageReader(
        transport,
        str(tmp_path),
        lambda s, lines: None,
        interval_s=0.1,
        idle_interval_s=1.0,
        idle_after_s=30.0,
        clock=clock,
        sleep=sleep,
    )
    with reader.read_messages(handler=None):  # type: ignore[arg-type]
        assert transport.done.wait(JOIN_TIMEOUT_S)
    # 30 s at <= 10 reads/s, then one read per second for the rest of the hour
    assert 3500 <= transport.reads <= 30 * 10 + 3600, transport.reads
    print(f"silent job, local transport: {transport.reads} reads in a simulated hour")


class BurstThenExit(LocalTransport):
    """The job prints once, then ends: the answer with the exit code completes the read."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[float] = []

    def watch_files(self, exit_path, tails, *, window_s, check_s, check_max_s, **kw):
        self.calls.append(window_s)
        if len(self.calls) == 1:
            return WatchResult(b"", [b"", b"hello\n", b""], waited=True, next_check_s=check_s)
        return WatchResult(b"0\n", [b"", b"bye\n", b""], waited=True, next_check_s=check_s)


def test_the_answer_with_the_exit_code_is_complete_no_drain_round_trip(tmp_path: Path):
    transport = BurstThenExit()
    got: list[str] = []
    reader = RunDirMessageReader(transport, str(tmp_path), lambda s, lines: got.extend(lines))
    with reader.read_messages(handler=None):  # type: ignore[arg-type]
        assert reader.exited.wait(JOIN_TIMEOUT_S)
        assert reader.complete.is_set()
    assert got == ["hello", "bye"] and reader.exit_code == 0
    assert len(transport.calls) == 2  # no further reads after the exit code was seen
    assert transport.calls == [reader_mod.WATCH_WINDOW_MIN_S] * 2  # data reset the window

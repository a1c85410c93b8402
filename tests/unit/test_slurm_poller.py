"""The shared poller: one scheduler query per tick across processes; errors never 'finish' a job."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from dagster_hpc.backends.base import JobState
from dagster_hpc.backends.slurm_poller import (
    POLL_BACKOFF,
    SQUEUE_COMMAND,
    SlurmPoller,
    parse_squeue,
    slurm_state,
)
from dagster_hpc.errors import TransportError
from dagster_hpc.transport.base import CommandResult, Transport

SQUEUE_OUT = (
    "101|RUNNING|None|2026-11-21T21:00:00\n"
    "102|PENDING|Resources|2026-11-21T23:10:00\n"
    "103|PENDING|Priority|N/A\n"
    "104|COMPLETED|None|2026-11-21T20:00:00\n"
    "105|CANCELLED|None|2026-11-21T20:00:00\n"
)


class CountingTransport(Transport):
    """Answers squeue/sacct with canned text and logs every query to a file (shared by processes)."""

    def __init__(
        self, log: Path, squeue_out: str = SQUEUE_OUT, sacct_out: str = "", fail: bool = False
    ):
        self.log, self.squeue_out, self.sacct_out, self.fail = log, squeue_out, sacct_out, fail

    def run(
        self, command: str, *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        with open(self.log, "a") as f:
            f.write(command.split()[0] + "\n")
        if self.fail:
            raise TransportError("connection lost (simulated)")
        if command == SQUEUE_COMMAND:
            return CommandResult(0, self.squeue_out, "")
        if command.startswith("sacct"):
            return CommandResult(0, self.sacct_out, "")
        return CommandResult(127, "", f"unexpected command {command}")

    def put_tree(self, local_dir: Path, remote_dir: str, *, mode: int = 0o700) -> int:
        raise NotImplementedError

    def read_from(self, remote_path: str, offset: int, *, max_bytes: int = 4 << 20) -> bytes:
        raise NotImplementedError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queries(log: Path, kind: str = "squeue") -> int:
    return log.read_text().split().count(kind) if log.exists() else 0


def test_parse_squeue_and_states() -> None:
    jobs = parse_squeue(SQUEUE_OUT + "garbage line\n")
    assert jobs["102"] == {
        "state": "PENDING",
        "reason": "Resources",
        "start": "2026-11-21T23:10:00",
    }
    assert jobs["103"]["start"] == ""
    assert jobs["101"]["reason"] == ""
    assert len(jobs) == 5
    assert slurm_state("CANCELLED by 0") is JobState.CANCELLED
    assert slurm_state("COMPLETING") is JobState.RUNNING
    assert slurm_state("BOOT_FAIL") is JobState.NODE_FAIL
    assert slurm_state("WHATEVER") is JobState.UNKNOWN


def test_one_query_serves_every_job_within_a_tick(tmp_path: Path) -> None:
    log, clock = tmp_path / "q.log", FakeClock()
    poller = SlurmPoller(CountingTransport(log), "u@h:22", cache_dir=tmp_path, clock=clock)
    assert poller.status("101").state is JobState.RUNNING
    st = poller.status("102")
    assert (st.state, st.reason, st.expected_start) == (
        JobState.PENDING,
        "Resources",
        "2026-11-21T23:10:00",
    )
    assert poller.status("104").state is JobState.COMPLETED
    assert queries(log) == 1
    clock.now += 2.5
    poller.status("101")
    assert queries(log) == 2


def test_backoff_while_nothing_changes_and_reset_on_change(tmp_path: Path) -> None:
    log, clock = tmp_path / "q.log", FakeClock()
    transport = CountingTransport(log)
    poller = SlurmPoller(transport, "c", cache_dir=tmp_path, clock=clock, floor_s=2, max_s=10)
    intervals = []
    for _ in range(8):
        snap = poller.snapshot()
        assert snap is not None
        intervals.append(snap.interval_s)
        clock.now += snap.interval_s
    assert intervals[0] == 2
    assert intervals[1] == 2 * POLL_BACKOFF
    assert intervals[-1] == 10  # capped
    transport.squeue_out = SQUEUE_OUT.replace("102|PENDING|Resources", "102|RUNNING|None")
    snap = poller.snapshot()
    assert snap is not None and snap.interval_s == 2


def test_transient_errors_are_unknown_never_finished(tmp_path: Path) -> None:
    log, clock = tmp_path / "q.log", FakeClock()
    transport = CountingTransport(log)
    poller = SlurmPoller(transport, "c", cache_dir=tmp_path, clock=clock)
    assert poller.status("101").state is JobState.RUNNING
    transport.fail = True
    clock.now += 3
    st = poller.status("101")
    assert st.state is JobState.UNKNOWN and "connection lost" in st.reason
    assert not st.state.finished
    # a job we never saw is not looked up in sacct while the scheduler is unreachable
    assert poller.status("999").state is JobState.UNKNOWN
    assert queries(log, "sacct") == 0
    transport.fail = False
    clock.now += 10
    assert poller.status("101").state is JobState.RUNNING


def test_squeue_nonzero_exit_is_transient(tmp_path: Path) -> None:
    class Busy(CountingTransport):
        def run(self, command: str, **kw: object) -> CommandResult:
            super().run(command)
            return CommandResult(
                1, "", "slurm_load_jobs error: Socket timed out on send/recv operation"
            )

    poller = SlurmPoller(Busy(tmp_path / "q.log"), "c", cache_dir=tmp_path, clock=FakeClock())
    st = poller.status("101")
    assert st.state is JobState.UNKNOWN and "Socket timed out" in st.reason


def test_sacct_fallback_for_jobs_that_left_squeue(tmp_path: Path) -> None:
    log, clock = tmp_path / "q.log", FakeClock()
    transport = CountingTransport(log, sacct_out="77|TIMEOUT|0:0\n")
    poller = SlurmPoller(transport, "c", cache_dir=tmp_path, clock=clock)
    assert poller.status("77", submitted_at=clock.now - 1).state is JobState.UNKNOWN  # too fresh
    assert queries(log, "sacct") == 0
    assert poller.status("77").state is JobState.TIMEOUT
    assert poller.status("77").state is JobState.TIMEOUT  # final answers are remembered
    assert queries(log, "sacct") == 1
    transport.sacct_out = ""
    assert poller.status("78").state is JobState.UNKNOWN


def test_bad_intervals_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="floor_s"):
        SlurmPoller(CountingTransport(tmp_path / "q"), "c", cache_dir=tmp_path, floor_s=0)


def _worker(cache_dir: str, log: str, duration: float, floor: float, out: str) -> None:
    poller = SlurmPoller(
        CountingTransport(Path(log)),
        "shared",
        cache_dir=Path(cache_dir),
        floor_s=floor,
        max_s=floor,
    )
    seen = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        if poller.status("101").state is JobState.RUNNING:
            seen += 1
        time.sleep(0.01)
    Path(out).write_text(str(seen))


def test_several_processes_share_one_query_per_tick(tmp_path: Path) -> None:
    """8 processes polling as fast as they can for 1.2 s at a 0.3 s tick: ~4 queries in all."""
    log = tmp_path / "q.log"
    duration, floor, nproc = 1.2, 0.3, 8
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=_worker, args=(str(tmp_path), str(log), duration, floor, str(tmp_path / f"o{i}"))
        )
        for i in range(nproc)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    seen = [int((tmp_path / f"o{i}").read_text()) for i in range(nproc)]
    assert all(s > 10 for s in seen)  # every process got answers all along
    n = queries(log)
    snap = SlurmPoller(CountingTransport(log), "shared", cache_dir=tmp_path).snapshot()
    assert snap is not None and snap.seq >= n  # the shared counter saw every query
    ticks = duration / floor
    assert 1 <= n <= ticks + 2, (
        f"{n} scheduler queries for {ticks:.0f} ticks across {nproc} processes"
    )

"""The Pipes reader's idle cap used by Slurm mode: a quiet long job is read rarely."""

import time
from pathlib import Path

from dagster_hpc.pipes.reader import RunDirMessageReader
from dagster_hpc.transport.local import LocalTransport


class CountingLocal(LocalTransport):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read_many_from(self, requests, *, max_bytes=4 << 20):
        self.reads += 1
        return super().read_many_from(requests, max_bytes=max_bytes)


def _reads_in(seconds: float, tmp_path: Path, **kw) -> int:
    transport = CountingLocal()
    reader = RunDirMessageReader(
        transport, str(tmp_path), lambda stream, lines: None, interval_s=0.05, **kw
    )
    with reader.read_messages(handler=None):  # type: ignore[arg-type]  # no messages: never used
        time.sleep(seconds)
    return transport.reads


def test_quiet_job_is_read_at_the_idle_interval(tmp_path: Path) -> None:
    busy = _reads_in(2.5, tmp_path)
    idle = _reads_in(2.5, tmp_path, idle_interval_s=0.5, idle_after_s=0.2)
    # ~50 reads at 0.05 s; with the idle cap: the fast start, a backoff, then one per 0.5 s
    assert busy >= 40, busy
    assert idle * 2 < busy, (idle, busy)

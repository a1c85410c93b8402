"""What steps on threads of one process share in slurm mode (the concurrent executor): ONE
preflight question per settings (the others wait for its answer), ONE poller per cluster."""

import sys
import threading
import time
from pathlib import Path

from dagster_hpc.backends import slurm as slurm_mod
from dagster_hpc.backends.slurm import SlurmBackend
from dagster_hpc.transport.local import LocalTransport

STEPS = 8


class CountingTransport(LocalTransport):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self._seen = seen

    def run(self, command, **kw):
        if command.startswith("echo home=$HOME"):
            self._seen.append(command)
            time.sleep(0.2)  # a slow login node: every other step asks meanwhile
        return super().run(command, **kw)


def test_concurrent_steps_ask_the_preflight_once(fake_slurm, tmp_path: Path) -> None:
    slurm_mod._PREFLIGHT_CACHE.clear()
    seen: list[str] = []
    backends = [
        SlurmBackend(
            CountingTransport(seen),
            cluster="threads@test",
            remote_base_dir=str(tmp_path / "remote"),
            python=sys.executable,
        )
        for _ in range(STEPS)
    ]
    answers: list[dict] = []
    barrier = threading.Barrier(STEPS)

    def step(backend: SlurmBackend) -> None:
        barrier.wait()
        answers.append(backend._preflight())

    threads = [threading.Thread(target=step, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == STEPS and all(a == answers[0] for a in answers)
    assert answers[0]["base"] == "ok"
    assert len(seen) == 1


def test_backends_of_one_cluster_share_one_poller(fake_slurm, tmp_path: Path) -> None:
    a = SlurmBackend(LocalTransport(), cluster="one@poller", remote_base_dir=str(tmp_path))
    b = SlurmBackend(LocalTransport(), cluster="one@poller", remote_base_dir=str(tmp_path))
    c = SlurmBackend(LocalTransport(), cluster="other@poller", remote_base_dir=str(tmp_path))
    assert a.poller is b.poller and a.poller is not c.poller

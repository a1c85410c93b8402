"""runs gc on the real cluster over real SSH: an old run dir goes, a recent one stays, and an
old-looking run dir whose job is still in squeue is never touched."""

import shlex
import uuid

import pytest

from dagster_hpc.cli import main
from tests.integration.slurm_support import (
    cleanup_remote_bases,
    fresh_base,
    live_jobs_named,
    remote,
)


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    yield
    cleanup_remote_bases(cluster)


def test_runs_gc_on_the_cluster_spares_jobs_in_squeue(
    cluster, capsys: pytest.CaptureFixture
) -> None:
    base = fresh_base()
    b = '"$HOME"/' + shlex.quote(base.removeprefix("~/"))
    name = f"dhpc-gc-{uuid.uuid4().hex[:8]}"
    job_id = remote(
        cluster,
        f"set -e; for d in run1/old run1/busy run2/recent; do mkdir -p {b}/$d; echo x > {b}/$d/stdout.log; done; "
        f"touch -d '10 days ago' {b}/run1/old {b}/run1/old/stdout.log {b}/run1/busy {b}/run1/busy/stdout.log; "
        f"cd {b}/run1/busy && sbatch --parsable --job-name={name} --output=/dev/null --time=5 --mem=64M --wrap 'sleep 120'",
    ).strip()
    try:
        assert live_jobs_named(cluster, name), "the busy job is not in squeue"
        args = [
            "runs",
            "gc",
            "--older-than",
            "7d",
            "--no-local",
            "--remote-base",
            base,
            cluster.host,
            "-p",
            str(cluster.port),
            "-l",
            cluster.user,
            "-i",
            str(cluster.key_path),
            "--known-hosts",
            str(cluster.known_hosts),
        ]
        assert main(args) == 0
        out = capsys.readouterr().out
        left = remote(cluster, f"cd {b} && find . -mindepth 2 -maxdepth 2 -type d | sort").split()
        assert left == ["./run1/busy", "./run2/recent"]
        assert "removed 1 run dir(s); kept 1 with a job in squeue, 1 newer than 7d" in out
        assert "/run1/busy (its job is still in squeue)" in out
    finally:
        remote(cluster, f"scancel {shlex.quote(job_id)} || true")  # our own job only

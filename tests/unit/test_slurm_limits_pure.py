"""Pure parts of the impossible-request checks: the preflight's node counts, the hopeless
pending reasons, and the submit command's cleanup (run against a fake sbatch/squeue)."""

import subprocess
from pathlib import Path

import pytest

from dagster_hpc.backends.base import JobHandle, JobState, JobStatus
from dagster_hpc.backends.slurm_nodes import check_partition_nodes, partition_nodes
from dagster_hpc.backends.slurm_pending import PendingWatch
from dagster_hpc.backends.slurm_submit import REMOVED_MARK, submit_command
from dagster_hpc.errors import ConfigError, SlurmJobError

NODES = "debug;UNLIMITED;4,gpu;2;3,"


def test_partition_nodes_parses_the_preflight() -> None:
    assert partition_nodes(NODES) == {"debug": (4, None), "gpu": (3, 2)}
    assert partition_nodes("") == {} and partition_nodes("junk,") == {}


@pytest.mark.parametrize(
    ("nodes", "partition", "match"),
    [
        (5, "debug", "has only 4 nodes"),
        (3, "gpu", "at most 2 nodes per job"),
    ],
)
def test_impossible_node_counts_are_refused(nodes, partition, match) -> None:
    with pytest.raises(ConfigError, match=match):
        check_partition_nodes(NODES, nodes=nodes, partition=partition, cluster="c")


def test_possible_or_unknown_node_counts_pass() -> None:
    check_partition_nodes(NODES, nodes=4, partition="debug", cluster="c")
    check_partition_nodes(NODES, nodes=99, partition="other", cluster="c")  # not seen: no guess
    check_partition_nodes("", nodes=99, partition="debug", cluster="c")


HANDLE = JobHandle("slurm", "7", "/r/7", "c")


def test_a_hopeless_reason_fails_after_the_grace_and_cancels() -> None:
    cancelled: list[str] = []
    watch = PendingWatch(cluster="c", grace_s=0.0)
    with pytest.raises(SlurmJobError, match="pending with reason PartitionNodeLimit") as info:
        watch.check(
            HANDLE,
            JobStatus(JobState.PENDING, "PartitionNodeLimit"),
            lambda h: cancelled.append(h.job_id),
        )
    assert cancelled == ["7"] and info.value.job_id == "7"


def test_ordinary_pending_reasons_wait() -> None:
    watch = PendingWatch(cluster="c", grace_s=0.0)
    for reason in ("Priority", "Resources", "QOSMaxJobsPerUserLimit", ""):
        watch.check(HANDLE, JobStatus(JobState.PENDING, reason), lambda h: pytest.fail("cancelled"))


def test_the_grace_restarts_when_the_reason_changes() -> None:
    watch = PendingWatch(cluster="c", grace_s=3600.0)
    never = lambda h: pytest.fail("cancelled")  # noqa: E731
    watch.check(HANDLE, JobStatus(JobState.PENDING, "PartitionNodeLimit"), never)
    watch.check(HANDLE, JobStatus(JobState.PENDING, "Resources"), never)
    watch.check(HANDLE, JobStatus(JobState.PENDING, "PartitionNodeLimit"), never)


def _fake_bin(tmp_path: Path, sbatch_rc: int, squeue_out: str = "") -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho refused >&2\nexit {sbatch_rc}\n")
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '%s' '{squeue_out}'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    import os

    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _submit(tmp_path: Path, env: dict, run_dir: Path) -> subprocess.CompletedProcess:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "job.sh").write_text("true\n")
    tar = subprocess.run(["tar", "-c", "-f", "-", "-C", str(src), "."], capture_output=True)
    untar = f"mkdir -p '{run_dir}' && tar -x -f - -C '{run_dir}'"
    return subprocess.run(
        ["bash", "-c", submit_command(untar, str(run_dir))],
        input=tar.stdout,
        capture_output=True,
        env=env,
    )


def test_a_refused_submit_removes_its_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "step-1"
    result = _submit(tmp_path, _fake_bin(tmp_path, 1), run_dir)
    assert result.returncode == 1 and REMOVED_MARK in result.stderr.decode()
    assert not run_dir.exists()


def test_a_run_dir_a_queued_job_works_in_is_kept(tmp_path: Path) -> None:
    """sbatch may time out after slurmctld queued the job: that job's directory must stay."""
    run_dir = tmp_path / "runs" / "step-1"
    result = _submit(tmp_path, _fake_bin(tmp_path, 1, squeue_out=f"{run_dir}\n"), run_dir)
    assert result.returncode == 1 and REMOVED_MARK not in result.stderr.decode()
    assert (run_dir / "job.sh").exists()

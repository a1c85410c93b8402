"""Reattach on the real cluster: the Dagster process that submitted a job is SIGKILLed while the
job runs; the job keeps running; re-executing the run from failure waits for THAT job (no second
sbatch) and still delivers every Pipes message and log line it wrote, before and after the kill."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_script import job_name
from tests.integration import slurm_reattach_defs
from tests.integration.slurm_support import (
    cleanup_remote_bases,
    jobs_in_slurmctld,
    jobs_named,
    live_jobs_named,
    remote,
    slurm_env,
    staged_run_dirs,
    wait_running,
)

REPO = Path(__file__).resolve().parents[2]
ASSET = f"reattach_{uuid.uuid4().hex[:8]}"
# The driver imports Dagster (~3 s) and submits; the idle test cluster starts a job in ~1 s.
JOB_VISIBLE_WITHIN_S = 90
# After the kill: long enough for a wrongly-installed cancel path (atexit, signal handler) to act.
AFTER_KILL_PAUSE_S = 3.0


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    yield
    cleanup_remote_bases(cluster)


@pytest.fixture(scope="module")
def shared_env(cluster) -> dict[str, str]:
    """One asset name and one set of Slurm settings for the whole module: Dagster caches the
    reconstructed job (and its resources) per process, so every re-execution here uses them."""
    return {**slurm_env(cluster), "DAGSTER_HPC_REATTACH_ASSET": ASSET}


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        line
        for e in instance.all_logs(run_id)
        if e.user_message
        for line in e.user_message.split("\n")
    ]


@pytest.mark.parametrize("job_ended_first", [False, True], ids=["job-running", "job-finished"])
def test_killed_step_is_reattached_on_reexecution_without_a_second_sbatch(
    cluster,
    shared_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job_ended_first: bool,
) -> None:
    name = ASSET  # one per process: Dagster caches the reconstructed job definition in process
    slurm_name = job_name(name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**shared_env, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.slurm_reattach_defs"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    job_id = ""
    try:
        job_id = wait_running(cluster, slurm_name, proc, within_s=JOB_VISIBLE_WITHIN_S)
        proc.kill()  # SIGKILL: the step process dies mid-run (crash, OOM kill, redeploy)
        proc.wait(timeout=30)
        time.sleep(AFTER_KILL_PAUSE_S)
        assert live_jobs_named(cluster, slurm_name) == [f"{job_id} RUNNING"]  # not cancelled
        if job_ended_first:  # Dagster came back only after the job had finished
            deadline = time.monotonic() + JOB_VISIBLE_WITHIN_S
            while live_jobs_named(cluster, slurm_name):
                assert time.monotonic() < deadline, f"job {job_id} did not finish"
                time.sleep(0.5)

        # the same settings in this process (the re-execution runs here, in process)
        for key, value in env.items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        with dg.DagsterInstance.get() as instance:
            (killed,) = instance.get_runs()
            assert killed.status == dg.DagsterRunStatus.STARTED  # its process died with it
            # what Dagster's run monitoring does for a dead run worker
            instance.report_run_failed(killed)
            started = time.monotonic()
            result = dg.execute_job(
                dg.reconstructable(slurm_reattach_defs.reattach_job),
                instance=instance,
                reexecution_options=dg.ReexecutionOptions.from_failure(killed.run_id, instance),
            )
            wall = time.monotonic() - started
            assert result.success
            messages = _messages(instance, result.run_id)
            md = result.asset_materializations_for_node(name)[0].metadata
    finally:
        if proc.poll() is None:
            proc.kill()
    # exactly one job of this test ever: the re-execution did not sbatch again (slurmctld holds
    # every job of both runs, ended ones for MinJobAge), and accounting has it COMPLETED
    runs = (killed.run_id, result.run_id)
    assert jobs_in_slurmctld(cluster, slurm_name, runs=runs) == [job_id]
    assert jobs_named(cluster, slurm_name, expect=1, runs=runs) == [(job_id, "COMPLETED")]
    why = "it already finished with exit code 0" if job_ended_first else "it is RUNNING"
    assert any(
        f"reattaching to Slurm job {job_id} (run dir " in m and why in m for m in messages
    ), messages
    assert md["slurm/job_id"].value == job_id
    assert md["slurm/state"].value == "COMPLETED"
    assert md["lines_printed"].value == 30  # the payload's Pipes metadata
    assert "slow_reporter: started" in messages  # a Pipes log message written before the kill
    steps = [m for m in messages if m.startswith("step ")]
    assert steps == [f"step {i}" for i in range(30)]  # every line, from offset 0, none twice
    # keep_run_dirs='failed' (default): the successful job's run dir is gone, nothing else staged
    assert staged_run_dirs(cluster, env["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"]) == []
    print(
        f"reattach ({'finished' if job_ended_first else 'running'} job): re-execution wall {wall:.1f} s (job {job_id})"
    )
    remote(cluster, f"scancel {job_id} || true")  # our own job (already finished)

"""The reconcile sensor on the real cluster: the Dagster process of a run dies while its Slurm
job runs, Dagster marks the run failed, and the sensor cancels exactly that job, records why,
and costs nothing (counted round trips) while no job is in flight."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.compute import ComputeResource
from dagster_hpc.launch_records import LaunchRecords
from dagster_hpc.sensor import build_reconcile_sensor, reconcile_tick
from tests.integration.slurm_support import (
    cleanup_remote_bases,
    live_jobs_named,
    slurm_env,
    wait_running,
)

REPO = Path(__file__).resolve().parents[2]
# The driver imports Dagster (~3 s, more on a loaded machine) and submits; other people's jobs
# may hold the nodes for a while.
JOB_VISIBLE_WITHIN_S = 180
# scancel -> the job leaves squeue after KillWait (30 s on the test cluster) at most
CANCEL_CONFIRM_WITHIN_S = 90
IDLE_TICKS = 10


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    yield
    cleanup_remote_bases(cluster)


@pytest.mark.slow
def test_sensor_cancels_the_job_of_a_failed_run_and_is_free_when_idle(
    cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    asset = f"ops_{uuid.uuid4().hex[:8]}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    cache = tmp_path / "cache"  # this test's own launch records and poll cache
    env = {
        **slurm_env(cluster),
        "DAGSTER_HPC_OPS_ASSET": asset,
        "DAGSTER_HOME": str(home),
        "XDG_CACHE_HOME": str(cache),
    }
    for k in ("DAGSTER_HOME", "XDG_CACHE_HOME", *(k for k in env if k.startswith("DAGSTER_HPC_"))):
        monkeypatch.setenv(k, env[k])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.slurm_ops_defs"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    slurm_name = job_name(asset)
    try:
        job_id = wait_running(cluster, slurm_name, proc, within_s=JOB_VISIBLE_WITHIN_S)
        proc.kill()  # the run worker dies: its job keeps running, nobody waits for it
        proc.wait(timeout=30)
        compute = ComputeResource(mode="slurm", slurm=SlurmResource.from_env())
        with dg.DagsterInstance.get() as instance:
            records = LaunchRecords.for_instance(instance)
            (record,) = list(records)
            assert record.job_id == job_id
            (run,) = instance.get_runs()
            assert record.run_id == run.run_id
            # the run is still STARTED: its job is left alone, at no scheduler cost
            assert reconcile_tick(instance, compute, grace_s=0) == []
            instance.report_run_failed(run)  # what run monitoring does for a dead run worker
            sensor = build_reconcile_sensor(grace_s=0)
            with dg.build_sensor_context(instance=instance, resources={"compute": compute}) as ctx:
                result = sensor(ctx)
            assert "1 job(s) cancelled" in str(result)
            deadline = time.monotonic() + CANCEL_CONFIRM_WITHIN_S
            while live_jobs_named(cluster, slurm_name):
                assert time.monotonic() < deadline, f"job {job_id} still running after scancel"
                time.sleep(1)
            (entry,) = [e for e in records.audit_entries() if e["action"] == "cancelled"]
            assert (entry["run_id"], entry["job_id"]) == (run.run_id, job_id)
            assert "FAILURE" in entry["why"]
            messages = [e.message for e in instance.all_logs(run.run_id)]
            assert any(f"cancelled Slurm job {job_id}" in m for m in messages)
            # the next ticks see it gone and forget it (poll cache refreshes after its floor)
            deadline = time.monotonic() + CANCEL_CONFIRM_WITHIN_S
            while list(records):
                reconcile_tick(instance, compute, grace_s=0)
                assert time.monotonic() < deadline, "the record of the cancelled job stayed"
                time.sleep(1)
            # nothing in flight: 10 ticks, 0 round trips on a counted connection
            transport = compute.slurm.make_transport()
            before = transport.roundtrips
            for _ in range(IDLE_TICKS):
                assert reconcile_tick(instance, compute, grace_s=0, transport=transport) == []
            assert transport.roundtrips - before == 0
    finally:
        if proc.poll() is None:
            proc.kill()

"""Termination, process death and SSH outages on the real cluster: Dagster termination cancels the
job (confirmed), a killed Dagster process does not, and a dropped connection never does."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import _dagster_adapter
from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.compute import ComputeResource
from tests.integration.slurm_support import (
    CREATED_BASES,
    JOB_DEADLINE_S,
    PAYLOADS,
    cleanup_remote_bases,
    compute,
    live_jobs_named,
    remote,
    slurm_env,
    ssh_resource,
    wait_running,
)


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


REPO = Path(__file__).resolve().parents[2]
# The driver process imports Dagster (~3 s) and submits; the test cluster starts jobs in ~1 s.
JOB_VISIBLE_WITHIN_S = 60
# After SIGINT the step cancels and waits for Slurm's confirmation (KillWait=5 s here).
CANCEL_WITHIN_S = 60


def _start_driver(cluster, name: str, home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.slurm_driver",
            name,
            str(PAYLOADS / "sleeper.py"),
            str(home),
        ],
        cwd=REPO,
        env=slurm_env(cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_dagster_termination_cancels_the_job_and_confirms(cluster, tmp_path: Path) -> None:
    name = f"term_{uuid.uuid4().hex[:8]}"
    proc = _start_driver(cluster, name, tmp_path)
    try:
        job_id = wait_running(cluster, job_name(name), proc, within_s=JOB_VISIBLE_WITHIN_S)
        proc.send_signal(signal.SIGINT)  # what Dagster sends a run worker it terminates
        out, _ = proc.communicate(timeout=CANCEL_WITHIN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert live_jobs_named(cluster, job_name(name)) == []  # nothing left in squeue
    state = remote(cluster, f"sacct -X -n -P -j {job_id} --format=State").strip()
    assert state.startswith("CANCELLED"), state
    assert f"cancelling slurm job {job_id}" in out.decode()


def test_killed_dagster_process_leaves_the_job_running_with_its_handle_recorded(
    cluster, tmp_path: Path
) -> None:
    name = f"kill_{uuid.uuid4().hex[:8]}"
    proc = _start_driver(cluster, name, tmp_path)
    job_id = ""
    try:
        job_id = wait_running(cluster, job_name(name), proc, within_s=JOB_VISIBLE_WITHIN_S)
        proc.kill()  # a crash or a restart of Dagster: not a termination
        proc.wait(timeout=30)
        time.sleep(3)  # give a wrongly-installed cancel path every chance to act
        assert live_jobs_named(cluster, job_name(name)) == [f"{job_id} RUNNING"]
        # the launch handle was recorded in the run before waiting: a retry can find the job
        instance = dg.DagsterInstance.local_temp(tempdir=str(tmp_path))
        runs = instance.get_runs()
        assert len(runs) == 1
        events = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        handles = [
            e.dagster_event.engine_event_data.metadata["dagster_pipes/launch_handle"].value
            for e in events
            if "dagster_pipes/launch_handle" in e.dagster_event.engine_event_data.metadata
        ]
        # the intent (no job id yet, recorded before staging: a kill during sbatch is resolved
        # by the run dir), then the job
        assert len(handles) == 2 and '\\"job_id\\": \\"\\"' in handles[0]
        assert f'\\"job_id\\": \\"{job_id}\\"' in handles[1]
        assert _dagster_adapter.CLIENT_NAME in handles[1]
    finally:
        if job_id:
            remote(cluster, f"scancel {job_id}")  # our own job only


def test_ssh_outage_while_running_never_cancels_and_loses_no_line(cluster, dedicated_key) -> None:
    name = f"outage_{uuid.uuid4().hex[:8]}"
    resource = compute(cluster, ssh=ssh_resource(cluster, key_path=dedicated_key.path))
    shared = resource.slurm.ssh.get_transport()  # the connection holder every step here uses
    kills: list[int] = []

    def cut_connections() -> None:
        """Drop our SSH connection three times while the payload runs (a ~3 s flaky network)."""
        deadline = time.monotonic() + JOB_DEADLINE_S
        while not live_jobs_named(cluster, job_name(name)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(3):
            time.sleep(1.0)
            for port in shared.local_ports[-1:]:
                out = subprocess.run(
                    [
                        "ss",
                        "-Htnp",
                        "state",
                        "established",
                        f"( sport = :{cluster.port} and dport = :{port} )",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                for pid in sorted({int(p) for p in re.findall(r"pid=(\d+)", out)}):
                    os.kill(pid, signal.SIGTERM)
                    kills.append(pid)

    @dg.asset(name=name)
    def ticking(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "ticker.py").get_results()

    cutter = threading.Thread(target=cut_connections, daemon=True)
    cutter.start()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([ticking], resources={"compute": resource}, instance=instance)
    cutter.join(timeout=30)
    assert kills, "the test never cut the connection"
    assert dedicated_key.accepted(cluster.sshd_log("main")) >= 2  # it really reconnected
    md = result.asset_materializations_for_node(name)[0].metadata
    assert md["slurm/state"].value == "COMPLETED"
    lines = [
        line
        for e in instance.all_logs(result.run_id)
        if e.dagster_event is None and e.user_message
        for line in e.user_message.split("\n")
        if line.startswith("tick ")
    ]
    assert [line.split(" at ")[0] for line in lines] == [
        f"tick {i}" for i in range(8)
    ]  # none lost or doubled

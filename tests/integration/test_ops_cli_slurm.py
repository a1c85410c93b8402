"""Operator commands on the real cluster: `dagster-hpc cost` matches sacct, `jobs` shows the
Dagster run and step of a running job, `logs` prints (and follows) its output, `cancel --run`
stops exactly that run's job."""

import json
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.compute import ComputeResource
from tests.integration.slurm_support import (
    CREATED_BASES,
    PAYLOADS,
    cleanup_remote_bases,
    compute,
    live_jobs_named,
    remote,
    slurm_env,
)

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "dagster-hpc")
JOB_VISIBLE_WITHIN_S = 180
CANCEL_CONFIRM_WITHIN_S = 90


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cost_command_node_hours_match_sacct(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    names = [f"cost_{uuid.uuid4().hex[:6]}_{i}" for i in range(2)]

    def make(name):
        @dg.asset(name=name)
        def _a(context: dg.AssetExecutionContext, compute: ComputeResource):
            yield from compute.run(context, PAYLOADS / "short.py").get_results()

        return _a

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [make(n) for n in names], resources={"compute": compute(cluster)}, instance=instance
        )
        assert result.success
        tags = instance.get_run_by_id(result.run_id).tags
    out = _cli(
        {"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, "cost", result.run_id, "--json"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["jobs"]) == 2 and set(data["assets"]) == set(names)
    ids = ",".join(j["job_id"] for j in data["jobs"])
    sacct = remote(
        cluster,
        f"sacct -X -n -P --jobs {shlex.quote(ids)} --format=JobID,ElapsedRaw,NNodes,AllocCPUS",
    )
    expected = {}
    for line in sacct.split():
        job, elapsed, nodes, cpus = line.split("|")
        expected[job] = (int(elapsed) * int(nodes) / 3600, int(elapsed) * int(cpus) / 3600)
    for j in data["jobs"]:
        assert j["node_hours"] == pytest.approx(expected[j["job_id"]][0], abs=1e-6)
        assert j["cpu_hours"] == pytest.approx(expected[j["job_id"]][1], abs=1e-6)
    total = sum(v[0] for v in expected.values())
    assert data["totals"]["node_hours"] == pytest.approx(total, abs=1e-5)
    assert float(tags["dagster-hpc/node_hours"]) == pytest.approx(total, abs=1e-5)
    assert sorted(tags["dagster-hpc/slurm_jobs"].split(",")) == sorted(expected)


@pytest.mark.slow
def test_jobs_logs_and_cancel_run(cluster, tmp_path):
    asset = f"opscli_{uuid.uuid4().hex[:8]}"
    env = {
        **slurm_env(cluster),
        "DAGSTER_HPC_OPS_ASSET": asset,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    Path(env["DAGSTER_HOME"]).mkdir()
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.slurm_ops_defs"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    slurm_name = job_name(asset)
    follower = None
    try:
        deadline = time.monotonic() + JOB_VISIBLE_WITHIN_S
        while not any(line.endswith("RUNNING") for line in live_jobs_named(cluster, slurm_name)):
            assert time.monotonic() < deadline and driver.poll() is None
            time.sleep(0.5)
        listed = json.loads(_cli(env, "jobs", "--json").stdout)
        (ours,) = [j for j in listed if j["name"] == slurm_name]
        assert ours["state"] == "RUNNING" and ours["step"] == asset and len(ours["run_id"]) == 36
        deadline = time.monotonic() + 30
        while "sleeping" not in (logs := _cli(env, "logs", ours["job_id"])).stdout:
            assert time.monotonic() < deadline, logs.stdout + logs.stderr
            time.sleep(0.5)
        follower = subprocess.Popen(
            [CLI, "logs", "-f", ours["job_id"]],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        bad = _cli(env, "cancel", "999999999")
        assert bad.returncode == 1 and "not a pending or running dagster-hpc job" in bad.stderr
        done = _cli(env, "cancel", "--run", ours["run_id"])
        assert done.returncode == 0 and f"cancelled job {ours['job_id']}" in done.stdout
        deadline = time.monotonic() + CANCEL_CONFIRM_WITHIN_S
        while live_jobs_named(cluster, slurm_name):
            assert time.monotonic() < deadline
            time.sleep(1)
        # the wrapper forwards TERM, the payload dies, its exit_code file ends the follower
        followed, _ = follower.communicate(timeout=60)
        assert follower.returncode == 0 and "sleeping" in followed
    finally:
        for p in (driver, follower):
            if p is not None and p.poll() is None:
                p.kill()

"""Shared pieces of the Slurm-mode integration tests: resources pointed at the test cluster,
a fresh remote base per test, and ways to ask Slurm what really happened (as hpcuser)."""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from pathlib import Path

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.queue import QueueConfig
from dagster_hpc.ssh_resource import SSHConnectionResource

PAYLOADS = Path(__file__).parent / "slurm_payloads"
# A trivial job on the idle test cluster finishes in ~2 s; other engineers' jobs may queue ours.
JOB_DEADLINE_S = 180
# How long sacct may lag behind a job's end for queries by name (observed: about a second).
SACCT_NAME_LAG_S = 10


def env_value(cluster, name: str) -> str:
    for line in (cluster.confdir / "env.sh").read_text().splitlines():
        for part in line.removeprefix("export ").split():
            if part.startswith(name + "="):
                return part.split("=", 1)[1]
    raise AssertionError(
        f"{name} is not in {cluster.confdir}/env.sh: bring the cluster up with cluster/up.sh"
    )


def payload_python(cluster) -> str:
    """The pre-deployed venv with dagster-pipes that hpcuser can run on the compute nodes."""
    return env_value(cluster, "SLURM_TEST_PAYLOAD_PYTHON")


def ssh_resource(
    cluster,
    *,
    key_path: Path | None = None,
    transport: str = "asyncssh",
    control_dir: str | None = None,
) -> SSHConnectionResource:
    return SSHConnectionResource(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        key_path=str(key_path or cluster.key_path),
        use_agent=False,
        known_hosts_file=str(cluster.known_hosts),
        transport=transport,
        control_dir=control_dir,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Remote base directories the tests of this process created (removed by cleanup_remote_bases).
CREATED_BASES: list[str] = []


def fresh_base() -> str:
    base = f"~/.dagster-hpc-tests/{unique('slurm')}"
    CREATED_BASES.append(base)
    return base


def cleanup_remote_bases(cluster, since: int = 0) -> None:
    """Remove the run directories created since ``CREATED_BASES[since]`` (by name: ours only)."""
    mine = CREATED_BASES[since:]
    if mine:
        paths = " ".join('"$HOME"/' + shlex.quote(b.removeprefix("~/")) for b in mine)
        remote(cluster, f"rm -rf {paths}")
        del CREATED_BASES[since:]


def slurm_resource(cluster, *, queue: QueueConfig | None = None, **kw) -> SlurmResource:
    kw.setdefault("ssh", ssh_resource(cluster))
    kw.setdefault("remote_base_dir", fresh_base())
    kw.setdefault("python", payload_python(cluster))
    kw.setdefault("cluster_name", unique("testcluster"))  # own poll cache per test
    return SlurmResource(queue=queue or QueueConfig(time_limit="5", mem="256M"), **kw)


def compute(
    cluster, keep_run_dirs: str = "always", *, forward_cap_bytes: int | None = None, **kw
) -> ComputeResource:
    # "always": several tests inspect the run dir after a successful job (permissions, files);
    # the default policy ("failed") is tested in test_slurm_reattach and tests/unit/test_retention
    cap = {} if forward_cap_bytes is None else {"forward_cap_bytes": forward_cap_bytes}
    return ComputeResource(
        mode="slurm", keep_run_dirs=keep_run_dirs, slurm=slurm_resource(cluster, **kw), **cap
    )


def remote(cluster, command: str, *, timeout: float = 60) -> str:
    """Run ``command`` on the login node as the cluster user (plain ssh, not our transport)."""
    out = subprocess.run(
        ["ssh", "-F", str(cluster.ssh_config), "slurm-main", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return out.stdout


def jobs_named(cluster, name: str, *, expect: int = 0) -> list[tuple[str, str]]:
    """(job id, state) of every job of ours with this name in sacct (last hour).

    slurmdbd records a finished job's name a moment after ``sacct -j`` already shows it, so
    when ``expect`` jobs are expected we ask again for up to SACCT_NAME_LAG_S.
    """
    deadline = time.monotonic() + SACCT_NAME_LAG_S
    while True:
        text = remote(
            cluster,
            f"sacct -X -n -P --starttime now-1hour --name={shlex.quote(name)} --format=JobID,State",
        )
        rows = [tuple(line.split("|", 1)) for line in text.splitlines() if "|" in line]
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows  # type: ignore[return-value]
        time.sleep(0.5)


def staged_run_dirs(cluster, remote_base_dir: str) -> list[str]:
    """Run directories under a test's remote base: none means nothing was staged or submitted."""
    base = remote_base_dir.replace("~/", "$HOME/", 1)
    text = remote(cluster, f"find {base} -mindepth 2 -maxdepth 2 2>/dev/null || true")
    return [line for line in text.splitlines() if line.strip()]


def live_jobs_named(cluster, name: str) -> list[str]:
    """Lines of squeue (pending/running only) for jobs with this name."""
    text = remote(cluster, f"squeue --me --noheader --name={shlex.quote(name)} --format='%i %T'")
    return [line for line in text.splitlines() if line.strip()]


def slurm_env(
    cluster,
    *,
    key_path: Path | None = None,
    transport: str = "asyncssh",
    control_dir: str | None = None,
    **slurm: str,
) -> dict[str, str]:
    """Environment variables that make ``SlurmResource.from_env()`` point at the test cluster
    (what a user exports for a real site), for subprocesses and multiprocess steps."""
    import os

    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HPC_SSH_HOST": cluster.host,
            "DAGSTER_HPC_SSH_PORT": str(cluster.port),
            "DAGSTER_HPC_SSH_USER": cluster.user,
            "DAGSTER_HPC_SSH_KEY_PATH": str(key_path or cluster.key_path),
            "DAGSTER_HPC_SSH_USE_AGENT": "0",
            "DAGSTER_HPC_SSH_KNOWN_HOSTS": str(cluster.known_hosts),
            "DAGSTER_HPC_SSH_TRANSPORT": transport,
            "DAGSTER_HPC_SLURM_PYTHON": payload_python(cluster),
            "DAGSTER_HPC_SLURM_REMOTE_BASE_DIR": fresh_base(),
            "DAGSTER_HPC_SLURM_CLUSTER_NAME": unique("testcluster"),
            "DAGSTER_HPC_SLURM_TIME_LIMIT": "5",
            "DAGSTER_HPC_SLURM_MEM": "256M",
            "DAGSTER_HPC_MODE": "slurm",
        }
    )
    if control_dir:
        env["DAGSTER_HPC_SSH_CONTROL_DIR"] = control_dir
    env.update({f"DAGSTER_HPC_SLURM_{k.upper()}": v for k, v in slurm.items()})
    return env

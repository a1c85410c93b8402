"""Shared pieces of the Slurm-mode integration tests: resources pointed at the test cluster,
a fresh remote base per test, the reconstructable definitions' building blocks (assets that run
one payload each, multiprocess and driver jobs with settings from the environment), and ways to
ask Slurm what really happened (as hpcuser)."""

import contextlib
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.queue import QueueConfig
from dagster_hpc.ssh_resource import SSHConnectionResource

if TYPE_CHECKING:  # the defs modules import this file in step processes: no pytest there
    import pytest

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


# How long slurmdbd may take to replace a short job's stand-in row (no partition) by the job's
# own record: measured 1-5 s on a quiet test cluster, a loaded one is slower.
OWN_RECORD_WAIT_S = 60.0


def own_record_partition(cluster, job_id: str) -> str:
    """The partition in the job's own sacct record, once slurmdbd has written it ('' if it has
    not within OWN_RECORD_WAIT_S). Our metadata may come earlier, from a complete stand-in row
    plus slurmctld's partition (backends/slurm_sacct.py)."""
    deadline = time.monotonic() + OWN_RECORD_WAIT_S
    query = f"sacct -X -n -P -j {shlex.quote(str(job_id))} --starttime now-1hour --format Partition"
    while True:
        shown = remote(cluster, query).strip()
        if shown or time.monotonic() > deadline:
            return shown
        time.sleep(0.5)


def jobs_named(
    cluster, name: str, *, expect: int = 0, runs: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(job id, state) of every job of ours with this name in sacct (last hour); with ``runs``
    only the jobs of those Dagster runs (run dirs, the jobs' working directories, are
    <base>/<run id>/<step>-<suffix>).

    slurmdbd records a finished job's name a moment after ``sacct -j`` already shows it, so
    when ``expect`` jobs are expected we ask again for up to SACCT_NAME_LAG_S.
    """
    deadline = time.monotonic() + SACCT_NAME_LAG_S
    while True:
        text = remote(
            cluster,
            f"sacct -X -n -P --starttime now-1hour --name={shlex.quote(name)} "
            "--format=JobID,State,WorkDir",
        )
        rows = [
            (job, state)
            for job, state, workdir in (
                line.split("|") for line in text.splitlines() if line.count("|") == 2
            )
            if not runs or any(f"/{run_id}/" in workdir for run_id in runs)
        ]
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def jobs_in_slurmctld(cluster, name: str, *, runs: Sequence[str] = ()) -> list[str]:
    """Job ids of every job of ours with this name that slurmctld holds (``squeue -t all``:
    pending, running and ended less than MinJobAge ago, 300 s on the test cluster), with
    ``runs`` only those of these Dagster runs. A job is there from its sbatch on: no accounting
    lag, so "no second job" needs no wait (jobs_named waits SACCT_NAME_LAG_S for it)."""
    text = remote(
        cluster, f"squeue --me --noheader -t all --name={shlex.quote(name)} --format='%i|%Z'"
    )
    return [
        job
        for job, workdir in (line.split("|", 1) for line in text.splitlines() if "|" in line)
        if not runs or any(f"/{run_id}/" in workdir for run_id in runs)
    ]


def staged_run_dirs(cluster, remote_base_dir: str) -> list[str]:
    """Run directories under a test's remote base: none means nothing was staged or submitted."""
    base = remote_base_dir.replace("~/", "$HOME/", 1)
    text = remote(cluster, f"find {base} -mindepth 2 -maxdepth 2 2>/dev/null || true")
    return [line for line in text.splitlines() if line.strip()]


def live_jobs_named(cluster, name: str) -> list[str]:
    """Lines of squeue (pending/running only) for jobs with this name."""
    text = remote(cluster, f"squeue --me --noheader --name={shlex.quote(name)} --format='%i %T'")
    return [line for line in text.splitlines() if line.strip()]


# squeue poll while waiting for a job to start
RUNNING_POLL_S = 0.3


def wait_running(cluster, slurm_name: str, proc: subprocess.Popen, *, within_s: float) -> str:
    """The job id of our job ``slurm_name`` once squeue shows it RUNNING (the driver process
    ``proc`` that submits it must stay alive meanwhile: its output is the error otherwise)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        lines = live_jobs_named(cluster, slurm_name)
        if lines and lines[0].endswith("RUNNING"):
            return lines[0].split()[0]
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        time.sleep(RUNNING_POLL_S)
    raise AssertionError(f"job {slurm_name} did not start within {within_s} s")


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


# --- waits for Slurm's clock, run beside the other tests of their module ----------------------
# A test that waits for a time limit (Slurm's shortest is 1 minute, checked every ~30 s) mostly
# sleeps. Its materialization starts in a thread when its module starts (the module's other
# tests run meanwhile); the test itself, last in its module, waits for the result and asserts.


@contextlib.contextmanager
def in_background(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Future]:
    """``fn(*args, **kwargs)`` in a thread of its own; leaving waits for it (the module's
    cleanup of run directories comes after)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slurm-wait") as pool:
        yield pool.submit(fn, *args, **kwargs)


def start_early(request: "pytest.FixtureRequest", fixtures: dict[str, str]) -> None:
    """For a module's autouse fixture: set up ``fixtures[test]`` (which starts a background
    wait) now, at the module's start, for each ``test`` of this module that will run (a test
    deselected with -k or a node id starts nothing)."""
    selected = {
        getattr(item, "originalname", item.name)
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    }
    for test, fixture in fixtures.items():
        if test in selected:
            request.getfixturevalue(fixture)


# --- reconstructable definitions (tests/integration/*_defs.py, benchmarks) -------------------
# Their modules must be importable: a multiprocess step, or a driver process started with
# ``python -m``, rebuilds the job from its module; the compute resource comes from the
# environment (SlurmResource.from_env), as a deployment against a real site sets it.


def payload_asset(name: str, payload: Path, **run_kwargs: Any) -> dg.AssetsDefinition:
    """An asset ``name`` that runs ``payload`` as one Slurm job (``compute.run(**run_kwargs)``)."""

    @dg.asset(name=name)
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload, **run_kwargs).get_results()

    return _asset


def payload_assets(prefix: str, n: int, payload: Path) -> list[dg.AssetsDefinition]:
    """``n`` assets ``<prefix>_0`` .. ``<prefix>_<n-1>``, each running ``payload``."""
    return [payload_asset(f"{prefix}_{i}", payload) for i in range(n)]


def _from_env_job(
    name: str, assets: Sequence[dg.AssetsDefinition], **job_kwargs: Any
) -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job(name, selection=dg.AssetSelection.assets(*assets), **job_kwargs)],
        resources={"compute": ComputeResource(mode="slurm", slurm=SlurmResource.from_env())},
    )
    return defs.resolve_job_def(name)


def multiprocess_job(
    name: str,
    assets: Sequence[dg.AssetsDefinition],
    *,
    max_concurrent: int,
    start_method: dict | None = None,
) -> dg.JobDefinition:
    """A job of ``assets`` for the multiprocess executor (each step its own process), at most
    ``max_concurrent`` at a time; ``start_method`` is the executor's setting (default: spawn)."""
    executor: dict[str, Any] = {"max_concurrent": max_concurrent}
    if start_method is not None:
        executor["start_method"] = start_method
    return _from_env_job(name, assets, config={"execution": {"config": {"multiprocess": executor}}})


def driver_job(name: str, asset: dg.AssetsDefinition) -> dg.JobDefinition:
    """A one-asset job run in process: the driver process a test SIGKILLs is its step."""
    return _from_env_job(name, [asset], executor_def=dg.in_process_executor)


def drive(job_fn: Callable[[], dg.JobDefinition]) -> int:
    """A driver module's main: run ``job_fn``'s job in the DAGSTER_HOME instance (persistent:
    the tests re-execute or reconcile its run there); 0 when it succeeded."""
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(job_fn), instance=instance)
        return 0 if result.success else 1

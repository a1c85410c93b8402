"""Shared pieces of the env integration tests: the real SSHTransport to the test cluster as
hpcuser, a fresh remote base per test, the compute nodes' probed platform."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.ssh import SSHTransport

EXAMPLE_LOCK = Path(__file__).resolve().parents[2] / "examples" / "payload-env" / "uv.lock"
# A srun step on an idle test cluster starts in well under a second; a busy one (other
# engineers' tests) may queue it briefly.
SRUN_TIMEOUT_S = 120


def target(cluster) -> SSHTarget:
    return SSHTarget(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        key_paths=(str(cluster.key_path),),
        known_hosts=str(cluster.known_hosts),
        use_agent=False,
    )


def transport(cluster, *, share: bool = True) -> SSHTransport:
    return SSHTransport(target(cluster), share=share)


def cluster_id(cluster) -> str:
    return f"{cluster.user}@{cluster.host}:{cluster.port}"


def home(cluster) -> str:
    """The cluster user's home (the test cluster runs on this machine)."""
    import pwd

    return pwd.getpwnam(cluster.user).pw_dir


def fresh_remote_base(cluster) -> str:
    return f"{home(cluster)}/.dagster-hpc-tests/envs-{uuid.uuid4().hex[:10]}"


def srun(t: SSHTransport, argv: list[str], *, chdir: str = "/tmp") -> str:
    """Run ``argv`` as a job step on a compute node (as the cluster user); returns stdout."""
    cmd = (
        f"timeout {SRUN_TIMEOUT_S} srun --job-name=dhpc-envs-test --nodes=1 --ntasks=1 --time=2 "
        f"--chdir={shlex.quote(chdir)} --quiet " + " ".join(shlex.quote(a) for a in argv)
    )
    return t.check(cmd, timeout=SRUN_TIMEOUT_S + 10)

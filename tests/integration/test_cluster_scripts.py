"""cluster/: up.sh adopts the running daemons; the cluster has what the other tests rely on
(pre-deployed payload env, enforced memory limits ending OUT_OF_MEMORY)."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.ssh import SSHTransport

REPO = Path(__file__).resolve().parents[2]
# A re-run on a running cluster only checks and adopts (measured ~2-4 s; generous for load).
UP_AGAIN_MAX_S = 60
OOM_WAIT_S = 60
POLL_S = 0.5


def _transport(cluster) -> SSHTransport:
    return SSHTransport(SSHTarget(cluster.host, port=cluster.port, user=cluster.user, key_paths=(str(cluster.key_path),),
                                  known_hosts=str(cluster.known_hosts), use_agent=False))  # fmt: skip


def _pids(cluster) -> dict[str, str]:
    return {p.name: p.read_text().strip() for p in sorted((cluster.confdir / "run").glob("*.pid"))}


def test_up_again_adopts_the_running_daemons(cluster):
    before = _pids(cluster)
    start = time.monotonic()
    r = subprocess.run(["bash", str(REPO / "cluster" / "up.sh"), str(cluster.confdir)], capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SMOKE": "0"})  # fmt: skip
    took = time.monotonic() - start
    assert r.returncode == 0, r.stdout + r.stderr
    assert took < UP_AGAIN_MAX_S
    assert "slurmctld already running" in r.stdout and "sshd-main already running" in r.stdout
    assert _pids(cluster) == before  # nothing restarted: others' jobs and connections untouched


def test_payload_env_is_usable_by_jobs(cluster):
    env = (cluster.confdir / "env.sh").read_text()
    py = env.split("SLURM_TEST_PAYLOAD_PYTHON=")[1].split()[0]
    out = _transport(cluster).check(
        f"timeout 120 srun -N1 -J dhpc-envcheck {shlex.quote(py)} -c "
        + shlex.quote(
            "import dagster_pipes, polars, importlib.metadata as m; print(m.version('dagster-pipes'))"
        )
    )
    lock = (REPO / "uv.lock").read_text()
    pinned = lock.split('name = "dagster-pipes"\nversion = "')[1].split('"')[0]
    assert out.strip() == pinned


def test_over_memory_job_is_killed_and_recorded(cluster):
    """OverMemoryKill (default): killed after the sampler saw the peak; cgroup mode: OUT_OF_MEMORY."""
    t = _transport(cluster)
    cgroup = "TaskPlugin=task/cgroup" in cluster.slurm_conf.read_text()
    script = "python3 -c 'b = bytearray(400 * 2**20); import time; time.sleep(30)'"
    out = f"/tmp/dhpc-oom-check-{time.time_ns()}.out"
    job = t.check(
        f"sbatch --parsable -J dhpc-oom-check --mem=64M -t 2 -o {out} --wrap {shlex.quote(script)}"
    ).strip()
    deadline = time.monotonic() + OOM_WAIT_S
    state = ""
    while time.monotonic() < deadline:
        state = t.check(
            f"scontrol show job {job} | grep -o 'JobState=[A-Z_]*' | cut -d= -f2"
        ).strip()
        if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            break
        time.sleep(POLL_S)
    stderr = t.run(f"cat {out}; rm -f {out}").stdout
    if cgroup:
        assert state == "OUT_OF_MEMORY", f"job {job} ended {state}"
        return
    assert state == "FAILED" and "Exceeded job memory limit" in stderr, (
        f"job {job} ended {state}: {stderr}"
    )
    rss = ""
    while time.monotonic() < deadline and not rss:  # sacct sees the step once slurmdbd has it
        rss = t.check(f"sacct -n -P -j {job}.batch -o MaxRSS").strip()
        time.sleep(POLL_S)
    assert rss.endswith("K") and int(rss[:-1]) > 64 * 1024, f"MaxRSS of {job}.batch: {rss!r}"

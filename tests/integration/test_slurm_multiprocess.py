"""Eight Slurm-mode assets in one run with Dagster's multiprocess executor (each step its own
process): logins counted on the sshd, scheduler queries counted in the shared poll cache."""

import json
import math
import os
import shlex
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_poller import POLL_FLOOR_S, default_cache_dir
from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.openssh import OpenSSHTransport
from tests.integration import slurm_mp_defs
from tests.integration.slurm_support import (
    CREATED_BASES,
    cleanup_remote_bases,
    remote,
    slurm_env,
)


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def _run_eight(cluster, monkeypatch, tmp_path: Path, env: dict | None = None, **env_kw) -> dict:
    env = env or slurm_env(cluster, **env_kw)
    for k, v in env.items():
        if k.startswith("DAGSTER_HPC_"):
            monkeypatch.setenv(k, v)
    cache = default_cache_dir() / f"poll-{env['DAGSTER_HPC_SLURM_CLUSTER_NAME']}.json"
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        t0 = time.monotonic()
        with dg.execute_job(
            dg.reconstructable(slurm_mp_defs.eight_job), instance=instance
        ) as result:
            wall = time.monotonic() - t0
            assert result.success
            pids = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
            assert len(pids) == slurm_mp_defs.N_ASSETS  # really one process per step
            states = [
                result.asset_materializations_for_node(a.key.path[-1])[0]
                .metadata["slurm/state"]
                .value
                for a in slurm_mp_defs.ASSETS
            ]
            assert states == ["COMPLETED"] * slurm_mp_defs.N_ASSETS
    # no cache file: no step needed a scheduler query (the watch saw every job end first)
    queries = json.loads(cache.read_text())["seq"] if cache.exists() else 0
    return {"wall_s": round(wall, 2), "scheduler_queries": queries}


def _check_queries(figures: dict) -> None:
    # one squeue per tick machine-wide: never more queries than floor-spaced ticks in the run
    ticks = math.ceil(figures["wall_s"] / POLL_FLOOR_S) + 1
    assert 1 <= figures["scheduler_queries"] <= ticks, figures


def test_eight_assets_default_transport_one_login_in_all(
    cluster, dedicated_key, monkeypatch, tmp_path
) -> None:
    """The default configuration (asyncssh through the machine's connection holder)."""
    figures = _run_eight(cluster, monkeypatch, tmp_path, key_path=dedicated_key.path)
    logins = dedicated_key.accepted(cluster.sshd_log("main"))
    print(f"\n8 assets, default transport: {figures}, logins={logins}")
    assert logins == 1
    _check_queries(figures)


def test_eight_assets_killed_holder_is_replaced_and_steps_finish(
    cluster, dedicated_key, monkeypatch, tmp_path
) -> None:
    """SIGKILL the connection holder while all 8 jobs wait (none can finish before the test
    releases it): every step still succeeds and a new holder takes over with one more login."""
    env = slurm_env(cluster, key_path=dedicated_key.path)
    base = env["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"].replace("~", f"/home/{cluster.user}", 1)
    killed: list[int] = []

    def kill_then_release() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            out = remote(cluster, "squeue --me --noheader --states=all --format=%Z")
            if sum(line.startswith(base) for line in out.splitlines()) >= slurm_mp_defs.N_ASSETS:
                break
            time.sleep(0.5)
        holder = SlurmResource.from_env().ssh.get_transport()
        pid = int(holder.info()["pid"])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        time.sleep(1.0)  # the steps' readers and pollers meet the dead holder
        remote(cluster, f'for d in {shlex.quote(base)}/*/*/; do touch "$d/release"; done')

    for k, v in env.items():
        if k.startswith("DAGSTER_HPC_"):
            monkeypatch.setenv(k, v)  # the killer's get_transport() reads them too
    monkeypatch.setenv("DHPC_TEST_MP_PAYLOAD", "waiter.py")
    killer = threading.Thread(target=kill_then_release, daemon=True)
    killer.start()
    figures = _run_eight(cluster, monkeypatch, tmp_path, env=env)
    killer.join(timeout=30)
    logins = dedicated_key.accepted(cluster.sshd_log("main"))
    print(f"\n8 assets, holder killed: {figures}, logins={logins}, killed={killed}")
    assert killed, "the test never killed the holder"
    assert logins == 2


@pytest.fixture
def control_dir():
    path = tempfile.mkdtemp(prefix="dh-cm-")  # short: unix socket paths are limited to ~104 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_eight_assets_openssh_one_login_in_all(
    cluster, dedicated_key, monkeypatch, tmp_path, control_dir
) -> None:
    figures = _run_eight(
        cluster,
        monkeypatch,
        tmp_path,
        key_path=dedicated_key.path,
        transport="openssh",
        control_dir=control_dir,
    )
    logins = dedicated_key.accepted(cluster.sshd_log("main"))
    print(f"\n8 assets, OpenSSHTransport: {figures}, logins={logins}")
    try:
        assert logins == 1
        _check_queries(figures)
    finally:
        target = SSHTarget(
            host=cluster.host,
            port=cluster.port,
            user=cluster.user,
            key_paths=(str(dedicated_key.path),),
            known_hosts=str(cluster.known_hosts),
            use_agent=False,
        )
        OpenSSHTransport(target, control_dir=control_dir).close_master()

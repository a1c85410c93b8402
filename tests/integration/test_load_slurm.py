"""Load: 50 Slurm-mode assets in one run (multiprocess executor, 8 steps at a time) on the
private fault cluster, whose login node counts every squeue (a PATH shim): every Pipes message
arrives exactly once, scheduler queries stay within one per poll tick machine-wide, and the
connection holder logs in once for all 50 steps."""

import math
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_poller import POLL_FLOOR_S
from dagster_hpc.backends.slurm_sacct import FINAL_SQUEUE_PAUSES_S
from dagster_hpc.backends.slurm_script import job_name
from tests.integration import slurm_load_defs
from tests.integration.slurm_support import (
    CREATED_BASES,
    SACCT_NAME_LAG_S,
    cleanup_remote_bases,
    slurm_env,
)

MESSAGES = 3  # slurm_payloads/load_messages.py
POLL_S = 0.5


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(fault_cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(fault_cluster.cluster, since)


@pytest.fixture
def private_dir():
    """Outside pytest's basetemp: other pytest sessions on the machine rotate
    /tmp/pytest-of-root while this test runs for minutes (its key vanished mid-run once)."""
    path = Path(tempfile.mkdtemp(prefix="dhpc-load-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_fifty_assets_every_message_once_one_query_per_tick_one_login(
    fault_cluster, dedicated_key, monkeypatch, private_dir
):
    fc = fault_cluster
    key = private_dir / "id_test"
    shutil.copy(dedicated_key.path, key)
    key.chmod(0o600)
    tmp_path = private_dir / "dagster"
    tmp_path.mkdir()
    for k, v in slurm_env(fc.cluster, key_path=key).items():
        if k.startswith("DAGSTER_HPC_"):
            monkeypatch.setenv(k, v)
    queries_before = fc.squeue_calls(single_job=False)
    lookups_before = fc.squeue_calls(single_job=True)
    since = time.strftime("%Y-%m-%dT%H:%M:%S")  # sacct's local time, whole seconds
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        started = time.monotonic()
        with dg.execute_job(
            dg.reconstructable(slurm_load_defs.load_job), instance=instance
        ) as result:
            wall = time.monotonic() - started
            assert result.success
            states = Counter(
                result.asset_materializations_for_node(a.key.path[-1])[0]
                .metadata["slurm/state"]
                .value
                for a in slurm_load_defs.ASSETS
            )
            messages = Counter(
                (e.step_key, e.user_message)
                for e in instance.all_logs(result.run_id)
                if e.user_message.startswith("load message ")
            )
    queries = fc.squeue_calls(single_job=False) - queries_before
    lookups = fc.squeue_calls(single_job=True) - lookups_before
    logins = dedicated_key.accepted(fc.cluster.sshd_log("main"))
    ticks = math.ceil(wall / POLL_FLOOR_S) + 1
    print(
        f"\n50 assets (max_concurrent {slurm_load_defs.MAX_CONCURRENT}): wall {wall:.1f} s, "
        f"squeue calls {queries} (ticks {ticks}), single-job lookups {lookups}, logins {logins}"
    )
    assert states == {"COMPLETED": slurm_load_defs.N_ASSETS}
    expected = {
        (a.key.path[-1], f"load message {i}")
        for a in slurm_load_defs.ASSETS
        for i in range(MESSAGES)
    }
    assert set(messages) == expected  # lost 0
    assert max(messages.values()) == 1  # doubled 0
    assert queries <= ticks  # one scheduler query per tick for all 50 steps
    # each job's final record asks slurmctld about that one job until it has ended it (bounded)
    assert 0 < lookups <= slurm_load_defs.N_ASSETS * len(FINAL_SQUEUE_PAUSES_S)
    assert logins == 1  # the holder: one login for the whole run
    names = {job_name(a.key.path[-1]) for a in slurm_load_defs.ASSETS}
    assert _jobs_per_name(fc, names, since) == dict.fromkeys(names, 1)  # double submits 0


def _jobs_per_name(fc, names: set[str], since: str) -> dict[str, int]:
    """How many jobs of each name accounting has since ``since``; slurmdbd records a job's name
    a moment after its end, so asked again until every name is there (SACCT_NAME_LAG_S)."""
    deadline = time.monotonic() + SACCT_NAME_LAG_S
    while True:
        out = fc.slurm(
            "sacct", "-X", "-n", "-P", "-S", since, f"--name={','.join(sorted(names))}",
            "-o", "JobID,JobName",
        )  # fmt: skip
        counts = Counter(line.split("|", 1)[1] for line in out.splitlines() if "|" in line)
        if set(counts) >= names or time.monotonic() > deadline:
            return dict(counts)
        time.sleep(POLL_S)

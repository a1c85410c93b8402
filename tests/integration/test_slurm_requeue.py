"""Checkpoint and requeue on the real cluster (issue 15): the payload saves on the pre-timeout
signal and asks to be requeued; Slurm's own requeue (``scontrol requeue``, the same job id)
continues it in the same run directory; Dagster sees ONE step with every attempt in metadata.

Each attempt lasts seconds: the round trip's time limit is 1 minute with the signal 58 s before
it (Slurm's periodic time-limit check sends it within ~30 s); the other tests' attempts end by
the payload's own request or by preemption. The test cluster's ``cred_expire=15`` and
``sched_interval=2`` (cluster/up.sh) restart a requeued job after ~16-18 s, not Slurm's 121 s.
"""

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import SlurmJobError
from tests.integration import requeue_defs
from tests.integration.slurm_support import (
    CREATED_BASES,
    PAYLOADS,
    cleanup_remote_bases,
    compute,
    in_background,
    live_jobs_named,
    remote,
    slurm_env,
    start_early,
)

PAYLOAD = PAYLOADS / "checkpointer.py"
REPO = Path(__file__).resolve().parents[2]
# time limit 1 minute (the shortest Slurm has), the checkpoint signal 58 s before it: Slurm's
# periodic time-limit check sends it within seconds of the start
SHORT_ATTEMPTS = requeue_defs.SHORT_ATTEMPTS
# tests whose point is not the signal: none during the test (the payload asks by itself, or
# is preempted)
LONG_ATTEMPTS = requeue_defs.LONG_ATTEMPTS
# each requeue waits cred_expire + 1 s (~21 s here) plus the attempt itself: several minutes
# for three attempts is a broken requeue, not a slow one
REQUEUE_DEADLINE_S = 240
# the round trip: three attempts and two requeues
ROUND_TRIP_WITHIN_S = 3 * REQUEUE_DEADLINE_S
# the urgent job that preempts ours: long enough for Slurm to see it running
URGENT_SLEEP_S = 3


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def _round_trip(
    name: str, resource: ComputeResource
) -> tuple[dg.ExecuteInProcessResult, list[str], float]:
    queue = {**SHORT_ATTEMPTS, "requeue": True, "max_requeues": 2}
    started = time.monotonic()
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [_asset(name, queue, finish_on_attempt=3)],
            resources={"compute": resource},
            instance=instance,
        )
        logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    return result, logs, time.monotonic() - started


@pytest.fixture(scope="module")
def round_trip(cluster, _remove_our_run_dirs):
    """The three-attempt round trip (two waits for the pre-timeout signal and two requeues,
    about a minute), materialized in the background from the module's start: (asset name,
    future of ``_round_trip``)."""
    name = f"requeue_{uuid.uuid4().hex[:8]}"
    with in_background(_round_trip, name, compute(cluster)) as future:
        yield name, future


@pytest.fixture(autouse=True, scope="module")
def _start_the_slow_waits(request, _remove_our_run_dirs):
    start_early(
        request, {"test_requeue_round_trip_three_attempts_one_successful_step": "round_trip"}
    )


def _asset(name: str, queue: dict, **extras):
    @dg.asset(name=name)
    def _a(context: dg.AssetExecutionContext, compute: ComputeResource):
        completed = compute.run(context, PAYLOAD, queue=queue, extras=extras)
        yield from completed.get_results()

    return _a


def _history(md) -> list[list[int]]:
    return md["history"].value  # [attempt, first step, last step] per attempt (the payload's)


def _attempts(md) -> list[dict]:
    return md["slurm/attempt_history"].value


def _assert_resumed(history: list[list[int]], attempts: int) -> None:
    assert [h[0] for h in history] == list(range(1, attempts + 1)), history
    assert history[0][1] == 0
    for before, after in zip(history, history[1:], strict=False):
        assert after[1] == before[2] > before[1], history  # resumed exactly where it stopped


def test_max_requeues_exceeded_fails_naming_the_attempts(cluster) -> None:
    name = f"requeue_max_{uuid.uuid4().hex[:8]}"
    queue = {**LONG_ATTEMPTS, "requeue": True, "max_requeues": 1}
    started = time.monotonic()
    with pytest.raises(SlurmJobError) as info:
        dg.materialize(
            [_asset(name, queue, finish_on_attempt=99, requeue_after_steps=3)],
            resources={"compute": compute(cluster)},
        )
    text = str(info.value)
    assert "max_requeues exceeded" in text, text
    assert "after 2 attempts: 1 REQUEUED" in text and ", 2 FAILED" in text, text
    assert "max_requeues=1 is used up (2 attempts)" in text, text  # the wrapper's own line
    assert info.value.exit_code == 94
    assert live_jobs_named(cluster, job_name(name)) == []  # ended for good, not requeued again
    print(f"max_requeues exceeded: wall {time.monotonic() - started:.1f} s")


def test_preempted_job_with_requeue_continues(cluster) -> None:
    name = f"preempted_{uuid.uuid4().hex[:8]}"
    queue = {
        **LONG_ATTEMPTS,
        "requeue": True,
        "partition": "preemptible",
        "exclusive": True,
    }
    slurm_name = job_name(name)
    preempted: list[str] = []

    def preempt_when_running() -> None:
        deadline = time.monotonic() + REQUEUE_DEADLINE_S
        while time.monotonic() < deadline:
            lines = live_jobs_named(cluster, slurm_name)
            if lines and lines[0].endswith("RUNNING"):
                time.sleep(2)  # a few checkpointable steps
                out = remote(
                    cluster,
                    f"sbatch --parsable -p urgent --exclusive --time=1 --output=/dev/null "
                    f"--wrap 'sleep {URGENT_SLEEP_S}'",
                )
                preempted.append(out.strip())
                return
            time.sleep(0.3)

    thread = threading.Thread(target=preempt_when_running, daemon=True)
    thread.start()
    started = time.monotonic()
    result = dg.materialize(
        [_asset(name, queue, finish_on_attempt=2)], resources={"compute": compute(cluster)}
    )
    wall = time.monotonic() - started
    thread.join(timeout=5)
    assert preempted, "the urgent job was never submitted"
    assert result.success
    md = result.asset_materializations_for_node(name)[0].metadata
    assert md["slurm/attempts"].value == 2
    assert md["slurm/attempt_states"].value == "PREEMPTED, COMPLETED"  # Slurm's word (sacct -D)
    assert _attempts(md)[0]["how"] == "terminated"
    _assert_resumed(_history(md), 2)
    print(f"preempted and continued: wall {wall:.1f} s (urgent job {preempted[0]})")


def test_reattach_during_the_second_attempt(cluster, tmp_path: Path, monkeypatch) -> None:
    name = f"requeue_reattach_{uuid.uuid4().hex[:8]}"
    slurm_name = job_name(name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**slurm_env(cluster), "DAGSTER_HOME": str(home), requeue_defs.ASSET_ENV: name}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.requeue_defs"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = env["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"].replace("~/", "$HOME/", 1)
    try:
        deadline = time.monotonic() + REQUEUE_DEADLINE_S
        while "start\t2\t" not in remote(
            cluster, f"cat {base}/*/*/attempts.tsv 2>/dev/null || true"
        ):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "attempt 2 never started"
            time.sleep(0.5)
        proc.kill()  # the Dagster process dies during attempt 2
        proc.wait(timeout=30)
        (job_line,) = live_jobs_named(cluster, slurm_name)
        job_id = job_line.split()[0]
        for key, value in env.items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        with dg.DagsterInstance.get() as instance:
            (killed,) = instance.get_runs()
            instance.report_run_failed(killed)
            result = dg.execute_job(
                dg.reconstructable(requeue_defs.requeue_job),
                instance=instance,
                reexecution_options=dg.ReexecutionOptions.from_failure(killed.run_id, instance),
            )
            assert result.success
            every = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
            logs = [m for m in every if "checkpointer: attempt" in m]
            reattached = [m for m in every if "reattaching" in m]
            md = result.asset_materializations_for_node(name)[0].metadata
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any(f"reattaching to Slurm job {job_id}" in m and "RUNNING" in m for m in reattached)
    assert md["slurm/job_id"].value == job_id  # the same job: reattached, not submitted again
    assert md["slurm/attempts"].value == 2
    assert md["slurm/attempt_states"].value == "REQUEUED, COMPLETED"
    _assert_resumed(_history(md), 2)
    # the reattached reader starts at offset 0: both attempts' messages, each exactly once
    assert [m.split(" resumes")[0] for m in logs] == [
        "checkpointer: attempt 1",
        "checkpointer: attempt 2",
    ], logs


# Last in the module: its job started with the module (round_trip) and went through its
# attempts while the tests above ran.
def test_requeue_round_trip_three_attempts_one_successful_step(round_trip) -> None:
    name, future = round_trip
    result, logs, wall = future.result(timeout=ROUND_TRIP_WITHIN_S)
    assert result.success
    (mat,) = result.asset_materializations_for_node(name)  # one step, one materialization
    md = mat.metadata
    assert md["slurm/attempts"].value == 3
    assert md["slurm/attempt_states"].value == "REQUEUED, REQUEUED, COMPLETED"
    attempts = _attempts(md)
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["elapsed_s"] is not None and a["elapsed_s"] < 60 for a in attempts), attempts
    assert md["slurm/state"].value == "COMPLETED"
    assert md["attempt"].value == 3
    _assert_resumed(_history(md), 3)
    # the same Slurm job all along (scontrol requeue keeps the id), one step in Dagster
    steps = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert len(steps) == 1
    for n in (1, 2, 3):  # every attempt's Pipes log message arrived exactly once
        assert sum(f"checkpointer: attempt {n} resumes" in m for m in logs) == 1, logs
    assert any("attempt 2 started" in m and "requeued" in m for m in logs), logs
    assert not any("unexpected message received after closed" in m for m in logs), logs
    print(
        f"requeue round trip: 3 attempts {[a['elapsed_s'] for a in attempts]} s, wall {wall:.1f} s"
    )

"""hpc_executor on the real cluster: a diamond of Slurm-mode assets in ONE process with ONE
login; order and overlap read from sacct; a failing step fails the run like Dagster's
executors and re-execution from failure runs only what is left; a killed run re-executed from
failure reattaches to its in-flight jobs (no second sbatch); run termination cancels every
in-flight job (none left in squeue); a step retry policy resubmits the failed job."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from tests.integration.slurm_support import (
    CREATED_BASES,
    JOB_DEADLINE_S,
    SACCT_NAME_LAG_S,
    cleanup_remote_bases,
    remote,
    slurm_env,
)
from tests.unit import executor_defs

REPO = Path(__file__).resolve().parents[2]
# The driver imports Dagster (~3 s, more on a loaded machine); other people's jobs may queue ours.
JOBS_RUNNING_WITHIN_S = JOB_DEADLINE_S
# After SIGINT every step scancels and waits for Slurm's confirmation (KillWait=5 s here).
TERMINATED_WITHIN_S = 120
# A killed driver: long enough for a wrongly-installed cancel path (atexit, signal handler) to act.
AFTER_KILL_PAUSE_S = 3.0
SACCT_FORMAT = "JobID,JobName,State,Start,End,WorkDir"


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


@pytest.fixture
def slurm_mode(cluster, dedicated_key, monkeypatch) -> dict[str, str]:
    """This process (and drivers started with the returned env) in slurm mode, own key."""
    env = slurm_env(cluster, key_path=dedicated_key.path)
    env.update({"DH_EXEC_SLEEP_S": "1"})
    for var in ("DH_EXEC_FAIL", "DH_EXEC_FLAKY", "DH_EXEC_SLOW", "DH_EXEC_SLOW_S"):
        env.pop(var, None)
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        if key.startswith(("DAGSTER_HPC_", "DH_EXEC_")):
            monkeypatch.setenv(key, value)
    return env


def _jobs(cluster, run_ids: list[str], expect: int = 0) -> list[dict]:
    """Our Slurm jobs whose working directory belongs to one of these Dagster runs (sacct)."""
    deadline = time.monotonic() + SACCT_NAME_LAG_S
    while True:
        text = remote(
            cluster, f"sacct -X -n -P --starttime now-1hour --format={shlex.quote(SACCT_FORMAT)}"
        )
        rows = []
        for line in text.splitlines():
            job_id, name, state, start, end, workdir = (line.split("|") + [""] * 6)[:6]
            if any(f"/{run_id}/" in workdir for run_id in run_ids):
                rows.append(
                    {
                        "job_id": job_id,
                        "step": name.removeprefix("dhpc-"),
                        "state": state.split()[0] if state else "",
                        "start": start,
                        "end": end,
                        "run": next(r for r in run_ids if f"/{r}/" in workdir),
                    }
                )
        # slurmdbd's stand-in row of a short job is named "allocation" until the job's own
        # record replaces it (a few seconds later): wait for the real names too
        named = all(row["step"] != "allocation" for row in rows)
        if (len(rows) >= expect and named) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _live(cluster, run_id: str) -> list[tuple[str, str, str]]:
    """(job id, step, state) of the run's jobs still in squeue."""
    text = remote(cluster, "squeue --me --noheader --format='%i|%j|%T|%Z'")
    out = []
    for line in text.splitlines():
        job_id, name, state, workdir = (line.strip().split("|") + [""] * 4)[:4]
        if f"/{run_id}/" in workdir:
            out.append((job_id, name.removeprefix("dhpc-"), state))
    return out


def _t(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _execute(instance, **kw) -> dict:
    with dg.execute_job(
        dg.reconstructable(executor_defs.diamond_job), instance=instance, **kw
    ) as result:
        steps: dict[str, list[str]] = {}
        for event in result.all_events:
            if event.step_key:
                steps.setdefault(event.step_key, []).append(event.event_type_value)
        pids = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
        return {"success": result.success, "run_id": result.run_id, "steps": steps, "pids": pids}


def test_diamond_on_slurm_in_order_concurrently_with_one_login(
    cluster, dedicated_key, slurm_mode, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("DH_EXEC_SLEEP_S", "5")  # long enough to overlap in sacct's seconds
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = _execute(instance)
    assert run["success"], run["steps"]
    assert run["pids"] == {os.getpid()}  # every step in this one process
    jobs = {j["step"]: j for j in _jobs(cluster, [run["run_id"]], expect=4)}
    assert sorted(jobs) == ["join", "left", "right", "root"]
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}
    root, left, right, join = (jobs[k] for k in ("root", "left", "right", "join"))
    assert _t(root["end"]) <= min(_t(left["start"]), _t(right["start"]))
    assert max(_t(left["end"]), _t(right["end"])) <= _t(join["start"])
    # left and right ran at the same time on the cluster
    assert _t(left["start"]) < _t(right["end"]) and _t(right["start"]) < _t(left["end"]), jobs
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1  # one login for the whole run


def test_failing_step_fails_the_run_then_reexecution_from_failure_runs_the_rest(
    cluster, slurm_mode, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("DH_EXEC_FAIL", "left")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = _execute(instance)
        assert not first["success"]
        assert "STEP_FAILURE" in first["steps"]["left"]
        assert "STEP_START" not in first["steps"].get("join", [])  # downstream not executed
        monkeypatch.delenv("DH_EXEC_FAIL")
        again = _execute(
            instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(first["run_id"], instance),
        )
    assert again["success"], again["steps"]
    jobs = _jobs(cluster, [first["run_id"], again["run_id"]], expect=5)
    by_run = {
        r: sorted((j["step"], j["state"]) for j in jobs if j["run"] == r)
        for r in (first["run_id"], again["run_id"])
    }
    assert by_run[first["run_id"]] == [
        ("left", "FAILED"),
        ("right", "COMPLETED"),
        ("root", "COMPLETED"),
    ]
    assert by_run[again["run_id"]] == [("join", "COMPLETED"), ("left", "COMPLETED")]


def test_a_step_retry_policy_resubmits_the_failed_job(cluster, slurm_mode, monkeypatch, tmp_path):
    monkeypatch.setenv("DH_EXEC_FLAKY", "left")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = _execute(instance)
    assert run["success"], run["steps"]
    assert run["steps"]["left"].count("STEP_UP_FOR_RETRY") == 1
    jobs = _jobs(cluster, [run["run_id"]], expect=5)
    left = sorted((j["job_id"], j["state"]) for j in jobs if j["step"] == "left")
    assert [state for _, state in left] == ["FAILED", "COMPLETED"], left
    join = next(j for j in jobs if j["step"] == "join")
    assert _t(max(j["end"] for j in jobs if j["step"] == "left")) <= _t(join["start"])


def _driver(env: dict[str, str], home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.executor_defs", "diamond_job", str(home)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_in_flight(cluster, instance, driver, steps: set[str]) -> tuple[str, dict[str, str]]:
    """The run id and {step: job id} once all ``steps`` have RUNNING jobs."""
    deadline = time.monotonic() + JOBS_RUNNING_WITHIN_S
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
        runs = instance.get_runs()
        if runs:
            running = {s: j for j, s, st in _live(cluster, runs[0].run_id) if st == "RUNNING"}
            if steps <= set(running):
                return runs[0].run_id, running
        time.sleep(0.5)
    raise AssertionError(f"jobs of {steps} were not all running within {JOBS_RUNNING_WITHIN_S} s")


def test_run_termination_cancels_every_in_flight_job(cluster, slurm_mode, tmp_path) -> None:
    env = {**slurm_mode, "DH_EXEC_SLOW": "left,right", "DH_EXEC_SLOW_S": "600"}
    home = tmp_path / "home"
    home.mkdir()
    driver = _driver(env, home)
    instance = dg.DagsterInstance.local_temp(tempdir=str(home))
    try:
        run_id, running = _wait_in_flight(cluster, instance, driver, {"left", "right"})
        driver.send_signal(signal.SIGINT)  # what Dagster sends a run worker it terminates
        _, stderr = driver.communicate(timeout=TERMINATED_WITHIN_S)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert _live(cluster, run_id) == []  # nothing of this run left in squeue
    states = {j["step"]: j["state"] for j in _jobs(cluster, [run_id], expect=3)}
    assert states == {"root": "COMPLETED", "left": "CANCELLED", "right": "CANCELLED"}, states
    text = stderr.decode()
    for step in ("left", "right"):
        assert f"cancelling slurm job {running[step]}" in text
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def test_killed_run_reexecuted_from_failure_reattaches_to_its_jobs(
    cluster, slurm_mode, monkeypatch, tmp_path
) -> None:
    slow = {"DH_EXEC_SLOW": "left,right", "DH_EXEC_SLOW_S": "15"}
    home = tmp_path / "home"
    home.mkdir()
    driver = _driver({**slurm_mode, **slow}, home)
    instance = dg.DagsterInstance.local_temp(tempdir=str(home))
    try:
        run_id, running = _wait_in_flight(cluster, instance, driver, {"left", "right"})
        driver.kill()  # SIGKILL: a crash or a redeploy, not a termination
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    time.sleep(AFTER_KILL_PAUSE_S)
    assert {s for _, s, st in _live(cluster, run_id) if st == "RUNNING"} == {"left", "right"}
    for key, value in slow.items():
        monkeypatch.setenv(key, value)
    killed = instance.get_run_by_id(run_id)
    instance.report_run_failed(killed)  # what Dagster's run monitoring does for a dead worker
    again = _execute(
        instance, reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance)
    )
    assert again["success"], again["steps"]
    jobs = _jobs(cluster, [run_id, again["run_id"]], expect=4)
    per_step = sorted((j["step"], j["job_id"], j["state"]) for j in jobs)
    # no second sbatch for left and right: the re-execution waited for the killed run's jobs
    assert [(s, st) for s, _, st in per_step] == [
        ("join", "COMPLETED"),
        ("left", "COMPLETED"),
        ("right", "COMPLETED"),
        ("root", "COMPLETED"),
    ]
    assert {s: j for s, j, _ in per_step if s in running} == running
    logs = [e.user_message for e in instance.all_logs(again["run_id"]) if e.step_key == "left"]
    assert any("reattach" in text.lower() for text in logs), logs

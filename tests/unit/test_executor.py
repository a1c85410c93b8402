"""The concurrent executor (hpc_executor) in local mode: order, concurrency, failure semantics
compared with Dagster's in-process executor, re-execution from failure, retry policies, limits,
run termination (every payload process gone), all steps in ONE process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.unit import executor_defs

REPO = Path(__file__).resolve().parents[2]
# A local payload (python + dagster_pipes import) starts in well under a second; the diamond's
# payloads sleep 1 s each. Generous bounds for a loaded 2-core machine.
RUN_TIMEOUT_S = 120
PAYLOADS_RUNNING_WITHIN_S = 60
TERMINATED_WITHIN_S = 60


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HPC_MODE", "local")
    monkeypatch.setenv("DH_EXEC_BASE", str(tmp_path / "runs"))
    monkeypatch.setenv("DH_EXEC_SLEEP_S", "1")
    for var in ("DH_EXEC_FAIL", "DH_EXEC_FLAKY", "DH_EXEC_SLOW"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _execute(job_fn, instance, **kw) -> dict:
    """Run and summarize: success, per-step event types, spans (start, end) and step pids."""
    with dg.execute_job(dg.reconstructable(job_fn), instance=instance, **kw) as result:
        steps: dict[str, list[str]] = {}
        pids = set()
        for event in result.all_events:
            if event.step_key:
                steps.setdefault(event.step_key, []).append(event.event_type_value)
            if event.event_type_value == "STEP_START":
                pids.add(event.pid)
        spans = {}
        for key in steps:
            for mat in result.asset_materializations_for_node(key):
                spans[key] = (mat.metadata["started"].value, mat.metadata["ended"].value)
        return {
            "success": result.success,
            "run_id": result.run_id,
            "steps": steps,
            "spans": spans,
            "pids": pids,
        }


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_diamond_runs_in_graph_order_with_independent_steps_at_once(env: Path) -> None:
    with dg.instance_for_test(temp_dir=str(env)) as instance:
        run = _execute(executor_defs.diamond_job, instance)
    assert run["success"]
    spans = run["spans"]
    assert set(spans) == {"root", "left", "right", "join"}
    assert spans["root"][1] <= min(spans["left"][0], spans["right"][0])
    assert max(spans["left"][1], spans["right"][1]) <= spans["join"][0]
    assert _overlap(spans["left"], spans["right"]), spans  # really at the same time
    assert run["pids"] == {os.getpid()}  # one process: no per-step Python start


def _step_types(run: dict) -> dict[str, set[str]]:
    # the executors' own engine events differ by design; the step's story must not
    ignore = {"ENGINE_EVENT", "LOGS_CAPTURED", "STEP_WORKER_STARTING", "STEP_WORKER_STARTED"}
    return {k: set(v) - ignore for k, v in run["steps"].items()}


def test_a_failing_step_fails_the_run_like_dagsters_executor_then_reexecutes_from_failure(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DH_EXEC_FAIL", "left")
    with dg.instance_for_test(temp_dir=str(env)) as instance:
        ours = _execute(executor_defs.diamond_job, instance)
        theirs = _execute(executor_defs.diamond_job_in_process, instance)
        assert not ours["success"] and not theirs["success"]
        assert "join" not in ours["spans"] and "STEP_START" not in ours["steps"].get("join", [])
        assert "STEP_FAILURE" in ours["steps"]["left"]
        assert "STEP_SUCCESS" in ours["steps"]["right"]  # a sibling of the failure still runs
        assert _step_types(ours) == _step_types(theirs)

        monkeypatch.delenv("DH_EXEC_FAIL")
        again = _execute(
            executor_defs.diamond_job,
            instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(ours["run_id"], instance),
        )
    assert again["success"]
    started = {k for k, v in again["steps"].items() if "STEP_START" in v}
    assert started == {"left", "join"}  # root and right succeeded before: not run again


def test_a_step_retry_policy_is_honoured(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DH_EXEC_FLAKY", "left")  # fails its first attempt only
    with dg.instance_for_test(temp_dir=str(env)) as instance:
        ours = _execute(executor_defs.diamond_job, instance)
        theirs = _execute(executor_defs.diamond_job_in_process, instance)
    assert ours["success"]
    left = ours["steps"]["left"]
    assert left.count("STEP_UP_FOR_RETRY") == 1 and left.count("STEP_RESTARTED") == 1
    assert left.count("STEP_SUCCESS") == 1
    assert _step_types(ours) == _step_types(theirs)
    assert ours["spans"]["left"][1] <= ours["spans"]["join"][0]  # join waited for the retry


def _max_overlapping(spans: dict[str, tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    most = now = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    return most


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, 4),
        ({"max_concurrent": 2}, 2),
        (
            {
                "tag_concurrency_limits": [
                    {"key": executor_defs.WIDE_TAG, "value": "wide", "limit": 1}
                ]
            },
            1,
        ),
    ],
    ids=["unlimited", "max_concurrent", "tag_limit"],
)
def test_concurrency_limits(env: Path, monkeypatch, config: dict, expected: int) -> None:
    monkeypatch.setenv("DH_EXEC_WIDTH", "4")
    with dg.instance_for_test(temp_dir=str(env)) as instance:
        run = _execute(
            executor_defs.wide_job, instance, run_config={"execution": {"config": config}}
        )
    assert run["success"]
    assert len(run["spans"]) == 4
    assert _max_overlapping(run["spans"]) == expected, run["spans"]


def test_bad_executor_config_fails_before_any_step(env: Path) -> None:
    with dg.instance_for_test(temp_dir=str(env)) as instance:
        with pytest.raises(Exception, match="max_concurrent must be a whole number >= 1"):
            _execute(
                executor_defs.diamond_job,
                instance,
                run_config={"execution": {"config": {"max_concurrent": 0}}},
            )
    assert not (env / "runs").exists()  # nothing ran


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _job_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """step -> pid of its local job, from the "local job N started" log lines."""
    found = {}
    for entry in instance.all_logs(run_id):
        text = entry.user_message
        if entry.step_key and "dagster-hpc: local job " in text and " started for " in text:
            found[entry.step_key] = int(text.split("local job ", 1)[1].split()[0])
    return found


def test_run_termination_stops_every_in_flight_job(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DH_EXEC_SLOW", "left,right")
    monkeypatch.setenv("DH_EXEC_SLOW_S", "600")
    home = env / "home"
    home.mkdir()
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.executor_defs", "diamond_job", str(home)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        instance = dg.DagsterInstance.local_temp(tempdir=str(home))
        deadline = time.monotonic() + PAYLOADS_RUNNING_WITHIN_S
        pids: dict[str, int] = {}
        while time.monotonic() < deadline and not {"left", "right"} <= set(pids):
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            runs = instance.get_runs()
            pids = _job_pids(instance, runs[0].run_id) if runs else {}
            time.sleep(0.2)
        assert {"left", "right"} <= set(pids), pids
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)  # what Dagster sends a run worker it terminates
    _, stderr = driver.communicate(timeout=TERMINATED_WITHIN_S)
    text = stderr.decode()
    assert "run termination requested" in text
    for step in ("left", "right"):
        assert f"cancelling local job {pids[step]}" in text
        assert not _alive(pids[step])
    (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.FAILURE
    steps = {e.step_key for e in instance.all_logs(run.run_id) if e.step_key}
    assert "join" not in steps or not any(
        e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
        for e in instance.all_logs(run.run_id)
        if e.step_key == "join"
    )


def _wait_for_jobs(
    driver, instance, count: int, also: tuple[str, ...] = ()
) -> tuple[str, list[int]]:
    deadline = time.monotonic() + PAYLOADS_RUNNING_WITHIN_S
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
        runs = instance.get_runs()
        if runs:
            logs = instance.all_logs(runs[0].run_id)
            pids = [
                int(e.user_message.split("local job ", 1)[1].split()[0])
                for e in logs
                if "dagster-hpc: local job " in e.user_message
            ]
            seen = all(any(text in e.user_message for e in logs) for text in also)
            if len(pids) >= count and seen:
                return runs[0].run_id, pids
        time.sleep(0.2)
    raise AssertionError(f"{count} local jobs did not start within {PAYLOADS_RUNNING_WITHIN_S} s")


def test_termination_stops_compute_runs_on_user_threads_and_plain_python_bodies(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/executor.md: compute.run on threads the body starts is cancelled too; a body busy
    in plain Python is interrupted; one that logs in a tight loop (inside logging and Dagster's
    event log nearly all the time) is interrupted at a safe point; the run ends."""
    monkeypatch.setenv("DH_EXEC_SLOW_S", "600")
    home = env / "home"
    home.mkdir()
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.executor_defs", "termination_job", str(home)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    instance = dg.DagsterInstance.local_temp(tempdir=str(home))
    try:
        run_id, pids = _wait_for_jobs(
            driver,
            instance,
            2,
            also=("busy: looping in plain Python", "chatty: logging in a loop"),
        )
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)
    try:
        driver.communicate(timeout=TERMINATED_WITHIN_S)
    except subprocess.TimeoutExpired:
        driver.kill()  # a hung run must not outlive the test (its local jobs die with it)
        driver.communicate()
        raise
    assert not any(_alive(pid) for pid in pids)
    logs = instance.all_logs(run_id)
    failed = {
        e.step_key
        for e in logs
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    }
    assert failed == {"fanout", "busy", "chatty"}
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def test_the_documented_run_config_is_valid() -> None:
    """docs/executor.md's YAML block is accepted by the executor's config schema as written."""
    import yaml

    doc = (REPO / "docs" / "executor.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(block)
    assert set(config["execution"]["config"]) == {
        "max_concurrent",
        "tag_concurrency_limits",
        "retries",
    }
    dg.validate_run_config(executor_defs.diamond_job(), config)
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(
            executor_defs.diamond_job(), {"execution": {"config": {"max_concurent": 2}}}
        )

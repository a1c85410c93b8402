"""The reconcile sensor, against a scripted scheduler: what it cancels, forgets and never touches."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import ComputeResource, SlurmResource
from dagster_hpc.backends.slurm_poller import SlurmPoller
from dagster_hpc.launch_records import LaunchRecord, LaunchRecords
from dagster_hpc.sensor import build_reconcile_sensor, reconcile
from dagster_hpc.transport.base import CommandResult, Transport

CLUSTER = "unit-cluster"


class ScriptedScheduler(Transport):
    """squeue prints ``jobs`` ({id: state}); scancel marks a job CANCELLED. Counts commands."""

    def __init__(self, jobs: dict[str, str]):
        super().__init__()
        self.jobs = dict(jobs)
        self.commands: list[str] = []

    def run(self, command, *, timeout=None, stdin=None):
        self.commands.append(command)
        self._count()
        if command.startswith("squeue"):
            out = "".join(f"{j}|{s}|None|N/A\n" for j, s in self.jobs.items())
            return CommandResult(0, out, "")
        if command.startswith("scancel"):
            self.jobs[command.split()[1]] = "CANCELLED"
            return CommandResult(0, "", "")
        raise AssertionError(f"unexpected command {command}")

    def put_tree(self, local_dir, remote_dir, *, mode=0o700):
        raise NotImplementedError

    def put_file(self, local_path, remote_path, *, mode=0o600):
        raise NotImplementedError

    def read_from(self, remote_path, offset, *, max_bytes=4 << 20):
        raise NotImplementedError


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # private records + poll cache
    with dg.instance_for_test() as inst:
        yield inst


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    @dg.op
    def noop(): ...

    @dg.job
    def j():
        noop()

    run = instance.create_run_for_job(j, status=status)
    return run.run_id


def _record(records: LaunchRecords, run_id: str, job_id: str, age_s: float = 60) -> None:
    records.write(
        LaunchRecord(run_id, "step", job_id, CLUSTER, f"/r/{job_id}", time.time() - age_s)
    )


def _fresh(transport):
    # every tick gets a fresh squeue answer (the shared cache's floor would reuse the last one)
    return SlurmPoller(transport, CLUSTER, floor_s=1e-6, max_s=1e-6)


def _tick(instance, records, sched, **kw):
    return reconcile(
        instance, records, cluster=CLUSTER, transport=lambda: sched, grace_s=0, poller=_fresh, **kw
    )


def test_nothing_in_flight_costs_nothing(instance):
    records = LaunchRecords.for_instance(instance)
    sched = ScriptedScheduler({})
    made = []
    for _ in range(10):
        assert reconcile(instance, records, cluster=CLUSTER, transport=lambda: made.append(1)) == []
    assert made == [] and sched.roundtrips == 0


def test_jobs_of_running_runs_are_left_alone_without_asking_the_scheduler(instance):
    records = LaunchRecords.for_instance(instance)
    _record(records, _run(instance, dg.DagsterRunStatus.STARTED), "11")
    sched = ScriptedScheduler({"11": "RUNNING"})
    assert _tick(instance, records, sched) == [] and sched.commands == []


def test_job_of_a_failed_run_is_cancelled_then_confirmed_and_forgotten(instance):
    records = LaunchRecords.for_instance(instance)
    failed = _run(instance, dg.DagsterRunStatus.FAILURE)
    _record(records, failed, "21")
    sched = ScriptedScheduler({"21": "RUNNING"})
    (action,) = _tick(instance, records, sched)
    assert (action.action, action.job_id, action.run_id) == ("cancelled", "21", failed)
    assert "FAILURE" in action.why
    assert sched.commands[-1] == "scancel 21"
    (confirm,) = _tick(instance, records, sched)
    assert confirm.action == "cancel-confirmed" and list(records) == []


def test_one_squeue_per_tick_for_many_abandoned_jobs(instance):
    records = LaunchRecords.for_instance(instance)
    gone_run = "0" * 36
    for job in ("31", "32", "33"):
        _record(records, gone_run, job)
    sched = ScriptedScheduler({"31": "RUNNING", "32": "PENDING", "33": "COMPLETED"})
    actions = _tick(instance, records, sched)
    assert sorted((a.job_id, a.action) for a in actions) == [
        ("31", "cancelled"),
        ("32", "cancelled"),
        ("33", "forgotten"),
    ]
    assert "no longer exists" in actions[0].why
    assert sum(c.startswith("squeue") for c in sched.commands) == 1


def test_grace_and_retries_protect_jobs_a_retry_would_reattach(instance):
    records = LaunchRecords.for_instance(instance)
    failed = _run(instance, dg.DagsterRunStatus.FAILURE)
    _record(records, failed, "41")
    sched = ScriptedScheduler({"41": "RUNNING"})
    # just ended: within the grace period
    assert reconcile(instance, records, cluster=CLUSTER, transport=lambda: sched) == []

    @dg.op
    def noop(): ...

    @dg.job
    def j():
        noop()

    instance.create_run_for_job(
        j, status=dg.DagsterRunStatus.STARTED, tags={"dagster/parent_run_id": failed}
    )
    assert _tick(instance, records, sched) == [] and sched.commands == []


def test_other_clusters_and_unknown_answers_are_never_cancelled(instance):
    records = LaunchRecords.for_instance(instance)
    failed = _run(instance, dg.DagsterRunStatus.FAILURE)
    records.write(LaunchRecord(failed, "s", "51", "elsewhere", "/r", time.time() - 60))
    assert _tick(instance, records, ScriptedScheduler({"51": "RUNNING"})) == []

    class Broken(ScriptedScheduler):
        def run(self, command, *, timeout=None, stdin=None):
            self.commands.append(command)
            return CommandResult(1, "", "slurmctld busy")

    _record(records, failed, "52")
    broken = Broken({})
    assert _tick(instance, records, broken) == [] and len(list(records)) == 2


def test_the_sensor_definition_records_run_job_and_reason(instance, tmp_path: Path):
    records = LaunchRecords.for_instance(instance)
    failed = _run(instance, dg.DagsterRunStatus.CANCELED)
    _record(records, failed, "61")
    sched = ScriptedScheduler({"61": "RUNNING"})
    compute = ComputeResource(mode="slurm", slurm=SlurmResource(cluster_name=CLUSTER))

    from dagster_hpc import sensor as sensor_module

    sensor = build_reconcile_sensor(grace_s=0)
    original = sensor_module.reconcile

    def with_scripted(*args, **kwargs):
        kwargs["transport"] = lambda: sched
        return original(*args, **kwargs)

    sensor_module.reconcile = with_scripted
    try:
        with dg.build_sensor_context(instance=instance, resources={"compute": compute}) as ctx:
            result = sensor(ctx)
    finally:
        sensor_module.reconcile = original
    assert "1 job(s) cancelled" in str(result)
    (entry,) = records.audit_entries()
    assert (entry["run_id"], entry["job_id"], entry["action"]) == (failed, "61", "cancelled")
    events = [e.message for e in instance.all_logs(failed)]
    assert any("cancelled Slurm job 61" in m for m in events)


def test_an_unwritable_record_directory_warns_and_never_fails_the_step(instance, tmp_path):
    from types import SimpleNamespace

    from dagster_hpc.launch_records import remember

    records = LaunchRecords.for_instance(instance)
    records.directory.parent.mkdir(parents=True, exist_ok=True)
    records.directory.write_text("not a directory")  # mkdir/write will fail
    warnings: list[str] = []
    context = SimpleNamespace(
        instance=instance,
        run=SimpleNamespace(run_id="r"),
        log=SimpleNamespace(warning=warnings.append),
    )
    handle = SimpleNamespace(job_id="9", cluster=CLUSTER, run_dir="/r/9")
    remember(context, handle)
    assert "the reconcile sensor will not watch it" in warnings[0]

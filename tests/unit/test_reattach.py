"""Reattach decisions: the pure rules, the probe's shell against fake squeue, and the real facade
through fake Slurm (tests/unit/fake_slurm) with a step that dies after sbatch and is retried."""

import os
import shlex
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import execution
from dagster_hpc.backends.base import JobHandle, JobState
from dagster_hpc.backends.slurm_reattach import JobProbe, decide, parse_probe, probe, probe_command
from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import SubmissionError
from dagster_hpc.queue import QueueConfig
from dagster_hpc.transport.local import LocalTransport
from tests.unit.conftest import wait_until

FAKE_BIN = Path(__file__).parent / "fake_slurm"
PAYLOADS = Path(__file__).parent / "payloads"


def calls(state: Path, command: str) -> list[str]:
    log = state / "calls.log"
    return (
        [line for line in log.read_text().splitlines() if line.startswith(command + " ")]
        if log.exists()
        else []
    )


HANDLE = JobHandle("slurm", "42", "/home/u/.dagster-hpc/runs/r1/step-abc", "u@h:22")
# how long the fake job (report.py through the real wrapper) may take on a loaded machine
FAKE_JOB_DEADLINE_S = 60


@pytest.mark.parametrize(
    ("probe_result", "reattach", "text"),
    [
        (
            JobProbe(JobState.RUNNING, None, True),
            True,
            "reattaching to Slurm job 42 (run dir /home/u/.dagster-hpc/runs/r1/step-abc): it is RUNNING",
        ),
        (JobProbe(JobState.PENDING, None, True), True, "it is PENDING"),
        (JobProbe(JobState.UNKNOWN, None, True), True, "it is UNKNOWN"),
        (JobProbe(None, 0, True), True, "it already finished with exit code 0"),
        (JobProbe(JobState.COMPLETED, 0, True), True, "it already finished with exit code 0"),
        (JobProbe(None, 3, True), False, "it ended with exit code 3; submitting a new job"),
        (
            JobProbe(None, None, False),
            False,
            "Slurm no longer knows it and its run directory is gone (removed after success by keep_run_dirs, or purged?); submitting a new job",
        ),
        (JobProbe(None, None, True), False, "left no exit_code file"),
        (
            JobProbe(JobState.COMPLETED, None, False),
            False,
            "it ended COMPLETED and its run directory is gone",
        ),
        (
            JobProbe(JobState.CANCELLED, None, True),
            False,
            "it ended CANCELLED without an exit_code file",
        ),
    ],
)
def test_decide(probe_result: JobProbe, reattach: bool, text: str) -> None:
    decision = decide(HANDLE, probe_result)
    assert decision.reattach is reattach
    assert decision.handle == HANDLE
    assert text in decision.message


def test_decide_never_submits_when_squeue_cannot_answer() -> None:
    with pytest.raises(
        SubmissionError, match=r"(?s)cannot tell whether Slurm job 42 .*Nothing was submitted"
    ):
        decide(
            HANDLE,
            JobProbe(None, None, True, squeue_error="slurm_load_jobs error: Socket timed out"),
        )


def test_parse_probe() -> None:
    assert parse_probe("#squeue_rc=0\nRUNNING\n#dir=yes\n") == JobProbe(
        JobState.RUNNING, None, True
    )
    assert parse_probe("#squeue_rc=0\n\n#exit=0\n#dir=yes\n") == JobProbe(None, 0, True)
    gone = "#squeue_rc=1\nslurm_load_jobs error: Invalid job id specified\n"
    assert parse_probe(gone) == JobProbe(None, None, False)
    down = parse_probe(
        "#squeue_rc=1\nslurm_load_jobs error: Unable to contact slurm controller\n#dir=yes\n"
    )
    assert down.squeue_error.startswith("slurm_load_jobs error: Unable to contact")
    assert parse_probe("").squeue_error  # no answer at all is not "gone"


def test_probe_command_quotes_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real shell against fake squeue, with a run dir that needs quoting."""
    state = tmp_path / "slurm"
    state.mkdir()
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("PATH", f"{FAKE_BIN}:{os.environ['PATH']}")
    run_dir = tmp_path / "runs" / "r 1" / "it's-step"
    run_dir.mkdir(parents=True)
    handle = JobHandle("slurm", "7", str(run_dir), "fake")
    assert shlex.quote(f"{run_dir}/exit_code") in probe_command(handle)
    transport = LocalTransport()
    assert probe(transport, handle) == JobProbe(None, None, True)
    (state / "state.7").write_text("RUNNING\n")
    assert probe(transport, handle) == JobProbe(JobState.RUNNING, None, True)
    (run_dir / "exit_code").write_text("0\n")
    (state / "state.7").write_text("COMPLETED\n")
    assert probe(transport, handle) == JobProbe(JobState.COMPLETED, 0, True)
    shutil.rmtree(run_dir)
    (state / "state.7").unlink()
    assert probe(transport, handle) == JobProbe(None, None, False)
    assert transport.roundtrips == 4  # one per probe


# --- the facade: a step that dies after sbatch, retried in the same run ----------------------------


def _die_once(monkeypatch: pytest.MonkeyPatch, before_dying=None) -> list[str]:
    """The first wait raises (the step process 'dies' after sbatch; the job keeps running)."""
    real_wait = execution._wait
    died: list[str] = []

    def wait(context, backend, handle, reader):
        if not died:
            died.append(handle.job_id)
            if before_dying:
                before_dying(handle)
            raise RuntimeError("the step process died")
        return real_wait(context, backend, handle, reader)

    monkeypatch.setattr(execution, "_wait", wait)
    return died


def _materialize(tmp_path: Path, **slurm_kw):
    @dg.asset(name="retried", retry_policy=dg.RetryPolicy(max_retries=1))
    def retried(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context, PAYLOADS / "report.py", extras={"greeting": "first"}
        ).get_results()

    resource = ComputeResource(
        mode="slurm",
        slurm=SlurmResource(
            remote_base_dir=str(tmp_path / "remote"),
            python=sys.executable,
            queue=QueueConfig(time_limit="5", mem="256M"),
            **slurm_kw,
        ),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([retried], resources={"compute": resource}, instance=instance)
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    engine = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    handles = [
        e.dagster_event.message
        for e in engine
        if "dagster_pipes/launch_handle" in e.dagster_event.engine_event_data.metadata
    ]
    return result, logs + handles


def test_retried_step_reattaches_instead_of_submitting_again(
    fake_slurm: Path, tmp_path: Path, monkeypatch
) -> None:
    died = _die_once(monkeypatch)
    result, logs = _materialize(tmp_path)
    assert died == ["101"]
    assert len(calls(fake_slurm, "sbatch")) == 1
    assert any("dagster-hpc: reattaching to Slurm job 101 (run dir " in m for m in logs), logs
    assert any(
        "Reattached to in-progress external run slurm:localhost:101" in m for m in logs
    )  # re-recorded
    md = result.asset_materializations_for_node("retried")[0].metadata
    assert md["extras_seen"].value == "first" and md["slurm/job_id"].value == "101"
    assert any("progress 4" in m for m in logs)  # the job's output, read again from offset 0


def _wait_job_done(state: Path, job_id: str) -> None:
    wait_until(
        (state / f"rc.{job_id}").exists, timeout_s=FAKE_JOB_DEADLINE_S, what="the fake job to end"
    )


def test_purged_job_is_submitted_again_and_says_why(
    fake_slurm: Path, tmp_path: Path, monkeypatch
) -> None:
    def purge(handle: JobHandle) -> None:
        _wait_job_done(fake_slurm, handle.job_id)
        shutil.rmtree(handle.run_dir)  # e.g. a scratch purge
        (fake_slurm / f"state.{handle.job_id}").unlink()  # and Slurm forgot the job

    _die_once(monkeypatch, before_dying=purge)
    result, logs = _materialize(tmp_path)
    assert len(calls(fake_slurm, "sbatch")) == 2
    assert any("not reattaching to Slurm job 101" in m and "purged?" in m for m in logs), logs
    assert (
        result.asset_materializations_for_node("retried")[0].metadata["slurm/job_id"].value == "102"
    )


def test_reattach_false_submits_again(fake_slurm: Path, tmp_path: Path, monkeypatch) -> None:
    _die_once(monkeypatch, before_dying=lambda h: _wait_job_done(fake_slurm, h.job_id))
    result, logs = _materialize(tmp_path, reattach=False)
    assert len(calls(fake_slurm, "sbatch")) == 2
    assert not any(
        "reattaching to" in m for m in logs
    )  # neither reattached nor explained: not looked up


def test_reattach_is_a_documented_resource_field() -> None:
    field = SlurmResource.model_fields["reattach"]
    assert field.default is True and "instead of submitting a new one" in field.description

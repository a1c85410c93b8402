"""Reattach is keyed to the call, not the step: a step with two compute.run calls (preprocess,
then train) that dies during the second call and is retried reattaches call 0 to call 0's job
and call 1 to call 1's job (fake Slurm: tests/unit/fake_slurm). Before calls were numbered, the
retry's first call adopted the second call's job."""

import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import execution
from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.queue import QueueConfig

PAYLOADS = Path(__file__).parent / "payloads"


def _sbatch_calls(state: Path) -> int:
    log = state / "calls.log"
    return sum(1 for line in log.read_text().splitlines() if line.startswith("sbatch "))


def _two_call_asset() -> dg.AssetsDefinition:
    @dg.asset(name="two_calls", retry_policy=dg.RetryPolicy(max_retries=1))
    def two_calls(context: dg.AssetExecutionContext, compute: ComputeResource):
        pre = compute.run(context, ["echo", "preprocessed"], pipes=False)
        assert pre.metadata["slurm/job_id"].value  # the first call's own job
        yield from compute.run(
            context, PAYLOADS / "report.py", extras={"greeting": "second"}
        ).get_results()

    return two_calls


def _compute(tmp_path: Path, keep: str = "failed") -> ComputeResource:
    return ComputeResource(
        mode="slurm",
        keep_run_dirs=keep,
        slurm=SlurmResource(
            remote_base_dir=str(tmp_path / "remote"),
            python=sys.executable,
            queue=QueueConfig(time_limit="5", mem="256M"),
        ),
    )


def test_a_retry_reattaches_each_call_to_its_own_job(
    fake_slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_wait = execution._wait
    waits: list[str] = []

    def wait(context, backend, handle, reader):
        waits.append(handle.job_id)
        if len(waits) == 2:  # the step process "dies" while the second call's job runs
            raise RuntimeError("the step process died")
        return real_wait(context, backend, handle, reader)

    monkeypatch.setattr(execution, "_wait", wait)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [_two_call_asset()],
        resources={"compute": _compute(tmp_path, keep="always")},
        instance=instance,
    )
    assert result.success
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert waits == ["101", "102", "101", "102"]
    assert _sbatch_calls(fake_slurm) == 2  # nothing submitted twice
    assert any("reattaching to Slurm job 101" in m for m in logs), logs
    assert any("reattaching to Slurm job 102" in m for m in logs), logs
    md = result.asset_materializations_for_node("two_calls")[0].metadata
    assert md["slurm/job_id"].value == "102" and md["extras_seen"].value == "second"


def test_the_second_call_of_a_step_is_a_new_job(fake_slurm: Path, tmp_path: Path) -> None:
    """With keep_run_dirs="always" the second call used to 'reattach' to the first call's
    finished job: its payload never ran and the step reported the first job."""
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [_two_call_asset()],
        resources={"compute": _compute(tmp_path, keep="always")},
        instance=instance,
    )
    assert result.success
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert _sbatch_calls(fake_slurm) == 2
    assert not any("reattaching" in m for m in logs), logs
    md = result.asset_materializations_for_node("two_calls")[0].metadata
    assert md["slurm/job_id"].value == "102" and md["extras_seen"].value == "second"

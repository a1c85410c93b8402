"""keep_run_dirs: successful run dirs go once their output was read, failed ones stay (named in
the error), for local mode and for Slurm mode (fake Slurm: tests/unit/fake_slurm)."""

import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import ConfigError
from dagster_hpc.queue import QueueConfig
from dagster_hpc.rundir import check_removable

PAYLOADS = Path(__file__).parent / "payloads"
FAKE_BIN = Path(__file__).parent / "fake_slurm"


def _run(payload: Path, resource: ComputeResource):
    @dg.asset(name="kept_or_not")
    def kept_or_not(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload).get_results()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [kept_or_not], resources={"compute": resource}, instance=instance, raise_on_error=False
    )
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    return result, logs


def _step_dirs(base: Path) -> list[Path]:
    return sorted(base.glob("*/*"))


def test_local_default_removes_successful_run_dir(tmp_path: Path) -> None:
    result, _ = _run(PAYLOADS / "report.py", ComputeResource(base_dir=str(tmp_path)))
    assert result.success
    md = result.asset_materializations_for_node("kept_or_not")[0].metadata
    assert md["extras_seen"].value == ""  # the messages were read before the directory went
    assert "dagster_hpc/run_dir" not in md  # it pointed at the removed directory
    assert _step_dirs(tmp_path) == []


def test_local_default_keeps_failed_run_dir_and_names_it(tmp_path: Path) -> None:
    result, logs = _run(PAYLOADS / "fail.py", ComputeResource(base_dir=str(tmp_path)))
    assert not result.success
    (kept,) = _step_dirs(tmp_path)
    assert (kept / "stderr.log").exists()
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"{kept}/stderr.log" in str(failure.event_specific_data.error)


def test_local_always_keeps_and_never_removes_failed(tmp_path: Path) -> None:
    result, _ = _run(
        PAYLOADS / "report.py",
        ComputeResource(base_dir=str(tmp_path / "a"), keep_run_dirs="always"),
    )
    assert result.success and len(_step_dirs(tmp_path / "a")) == 1
    result, logs = _run(
        PAYLOADS / "fail.py", ComputeResource(base_dir=str(tmp_path / "n"), keep_run_dirs="never")
    )
    assert not result.success and _step_dirs(tmp_path / "n") == []
    assert any(
        "removed the failed job's run dir" in m and "keep_run_dirs='never'" in m for m in logs
    )


def test_unknown_policy_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown keep_run_dirs 'sometimes'.*'failed'"):
        dg.materialize(
            [_asset_for(PAYLOADS / "report.py")],
            resources={
                "compute": ComputeResource(base_dir=str(tmp_path), keep_run_dirs="sometimes")
            },
        )
    assert _step_dirs(tmp_path) == []


def _asset_for(payload: Path) -> dg.AssetsDefinition:
    @dg.asset(name="bad_policy")
    def bad_policy(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload).get_results()

    return bad_policy


@pytest.mark.parametrize("path", ["/", "/home/u", "runs/r/s", "/a/../b/c", ""])
def test_check_removable_refuses_what_cannot_be_a_run_dir(path: str) -> None:
    with pytest.raises(ConfigError, match="refusing to delete"):
        check_removable(path)


def test_slurm_removes_remote_run_dir_after_success_keeps_failed(
    tmp_path: Path, fake_slurm: Path
) -> None:
    remote = tmp_path / "remote"
    resource = ComputeResource(
        mode="slurm",
        slurm=SlurmResource(
            remote_base_dir=str(remote),
            python=sys.executable,
            queue=QueueConfig(time_limit="5", mem="256M"),
        ),
    )
    ok, _ = _run(PAYLOADS / "report.py", resource)
    assert ok.success
    md = ok.asset_materializations_for_node("kept_or_not")[0].metadata
    assert md["slurm/state"].value == "COMPLETED"
    assert _step_dirs(remote) == []
    failed, _ = _run(PAYLOADS / "fail.py", resource)
    assert not failed.success
    (kept,) = _step_dirs(remote)
    assert (kept / "exit_code").read_text().strip() != "0"

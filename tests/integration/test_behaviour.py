"""One behavioural scenario, three places a job runs: local mode, the fake Slurm (shell fakes of
sbatch/squeue/sacct on this machine) and the real Slurm cluster over SSH. The same asset must
give the same logs, metadata, check, extras, environment and partition key everywhere."""

import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import ComputeResource, QueueConfig, SlurmResource
from tests.integration.slurm_support import compute as real_slurm_compute
from tests.unit.conftest import fake_slurm  # noqa: F401 - the fixture, for the fake-Slurm case

REPORT = Path(__file__).parents[1] / "unit" / "payloads" / "report.py"
PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])


def _resource(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> ComputeResource:
    if where == "local":
        return ComputeResource(base_dir=str(tmp_path / "runs"))
    if where == "fake_slurm":
        request.getfixturevalue("fake_slurm")
        return ComputeResource(
            mode="slurm",
            slurm=SlurmResource(
                remote_base_dir=str(tmp_path / "remote"),
                python=sys.executable,
                queue=QueueConfig(time_limit="5", mem="256M"),
            ),
        )
    return real_slurm_compute(request.getfixturevalue("cluster"), keep_run_dirs="failed")


@pytest.mark.parametrize("where", ["local", "fake_slurm", "real_slurm"])
def test_the_same_asset_behaves_the_same_everywhere(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    name = f"behaviour_{uuid.uuid4().hex[:8]}"

    @dg.asset(
        name=name,
        partitions_def=PARTITIONS,
        check_specs=[dg.AssetCheckSpec("positive", asset=name)],
    )
    def report(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context,
            REPORT,
            extras={"greeting": "hi", "with_check": True},
            extra_env={"MY_SETTING": "on"},
            args=["--n", "two words"],
        ).get_results()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [report],
        resources={"compute": _resource(where, request, tmp_path)},
        partition_key="b",
        instance=instance,
        raise_on_error=False,
    )
    # the check fails (severity ERROR) by design of the payload: the step itself succeeds
    assert result.success
    md = result.get_asset_materialization_events()[-1].materialization.metadata
    seen = {k: md[k].value for k in ("extras_seen", "env_seen", "partition_env", "partition_pipes", "args")}  # fmt: skip
    assert seen == {
        "extras_seen": "hi",
        "env_seen": "on",
        "partition_env": "b",
        "partition_pipes": "b",
        "args": "--n two words",
    }
    assert md["run_id_env"].value == result.run_id
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [(c.event_specific_data.check_name, c.event_specific_data.passed) for c in checks] == [
        ("positive", False)
    ]
    assert checks[0].event_specific_data.severity == dg.AssetCheckSeverity.ERROR
    lines = [
        line
        for e in instance.all_logs(result.run_id)
        if e.dagster_event is None and e.user_message
        for line in e.user_message.split("\n")
    ]
    assert [m for m in lines if m.startswith("progress ")] == [f"progress {i}" for i in range(5)]
    assert "via pipes log" in lines
    assert any("[stderr] a warning on stderr" in m for m in lines)

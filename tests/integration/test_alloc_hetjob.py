"""A CPU + GPU heterogeneous job on the real cluster: BOTH components run and report (a batch
script that only runs component 0 fails this test), and GPU requests are checked against the
partition before anything is submitted."""

from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import ConfigError
from tests.integration.slurm_support import (
    CREATED_BASES,
    cleanup_remote_bases,
    compute,
    staged_run_dirs,
)

PAYLOAD = Path(__file__).parent / "slurm_payloads" / "component.py"
CPU = {"partition": "debug", "time_limit": "5", "mem": "200M"}
GPU = {"partition": "gpu", "time_limit": "5", "mem": "200M", "gpus_per_node": 1}


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def test_cpu_plus_gpu_hetjob_every_component_reports(cluster) -> None:
    seen = {}

    @dg.asset
    def het(context: dg.AssetExecutionContext, compute: ComputeResource):
        outcome = compute.run_hetjob(
            context, PAYLOAD, queues=[CPU, GPU], items=[{"role": "prepare"}, {"role": "train"}]
        )
        seen.update({r.key: r for r in outcome.results})
        return dg.MaterializeResult(metadata=outcome.summary_metadata())

    res = compute(cluster)
    result = dg.materialize([het], resources={"compute": res})
    assert result.success
    assert sorted(seen) == ["component-0", "component-1"]  # component 1 ran, not only 0
    c0, c1 = seen["component-0"].metadata, seen["component-1"].metadata
    assert c0["het_group"].value == 0 and c1["het_group"].value == 1
    assert c0["node"].value.startswith("node") and c1["node"].value.startswith("gpu")
    assert c0["gpus"].value == "" and c1["gpus"].value == "0"
    assert c0["role"].value == "prepare" and c1["role"].value == "train"
    job0, job1 = seen["component-0"].job_id, seen["component-1"].job_id
    assert job0.endswith("+0") and job1.endswith("+1") and job0.split("+")[0] == job1.split("+")[0]
    # per-component accounting: each component has its own sacct record and state
    assert c0["slurm/state"] == c1["slurm/state"] == "COMPLETED"
    assert c1["slurm/job_id"] == job1
    assert c1["slurm/gpus"] == 1 and c0.get("slurm/gpus", 0) == 0  # gres/gpu TRES accounted
    # each component's own final record (never slurmdbd's partition-less stand-in row)
    assert (c0["slurm/partition"], c1["slurm/partition"]) == ("debug", "gpu")


def test_gpus_on_a_cpu_partition_fail_before_submit(cluster) -> None:
    @dg.asset
    def wrong(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run_hetjob(context, PAYLOAD, queues=[CPU, {**GPU, "partition": "debug"}])

    res = compute(cluster)
    with pytest.raises(
        ConfigError,
        match=r"partition 'debug' .* has no nodes with GPUs: use a GPU partition \(gpu\)",
    ):
        dg.materialize([wrong], resources={"compute": res})
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []
    with pytest.raises(ConfigError, match="at most 2"):
        dg.materialize([_too_many()], resources={"compute": res})


def _too_many():
    @dg.asset
    def too_many(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run_hetjob(context, PAYLOAD, queues=[CPU, {**GPU, "gpus_per_node": 3}])

    return too_many

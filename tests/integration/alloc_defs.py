"""Reconstructable definitions of the allocation-mode tests (arrays over partitions).

Settings come from the environment: ComputeResource mode (DAGSTER_HPC_MODE), Slurm site
(SlurmResource.from_env), the partition count (DHPC_PARTITIONS), the asset name (DHPC_ASSET,
unique per test so its Slurm jobs can be counted by name) and the deliberate failure
(DHPC_FAIL_KEY / DHPC_FAIL_UNLESS, passed to the payload).
"""

import os
from pathlib import Path

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource

PAYLOAD = Path(__file__).parent / "slurm_payloads" / "partition.py"
JOB_NAME = "partitions_job"


def partition_keys(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


def partitions_job() -> dg.JobDefinition:
    name = os.environ.get("DHPC_ASSET", "parts")
    parts = dg.StaticPartitionsDefinition(
        partition_keys(int(os.environ.get("DHPC_PARTITIONS", "100")))
    )

    @dg.asset(name=name, partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOAD).get_results()

    mode = os.environ.get("DAGSTER_HPC_MODE", "local")
    env = {k: os.environ[k] for k in ("DHPC_FAIL_KEY", "DHPC_FAIL_UNLESS") if k in os.environ}
    compute = ComputeResource(
        mode=mode,
        extra_env=env,
        slurm=SlurmResource.from_env() if mode == "slurm" else None,
    )
    defs = dg.Definitions(
        assets=[_asset],
        jobs=[
            dg.define_asset_job(
                JOB_NAME,
                selection=[name],
                partitions_def=parts,
                executor_def=dg.in_process_executor,
            )
        ],
        resources={"compute": compute},
    )
    return defs.resolve_job_def(JOB_NAME)


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}

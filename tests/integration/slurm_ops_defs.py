"""A reconstructable one-asset job whose driver process the reconcile test SIGKILLs.

usage: python -m tests.integration.slurm_ops_defs
The asset name comes from DAGSTER_HPC_OPS_ASSET (unique per test, so its Slurm jobs can be found
by name), the payload sleeps until cancelled; Slurm settings from the environment
(SlurmResource.from_env); the instance from DAGSTER_HOME (persistent: its launch records are
what the sensor reads).
"""

import os
import sys
from pathlib import Path

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource

PAYLOAD = Path(__file__).parent / "slurm_payloads" / "sleeper.py"
JOB_NAME = "ops_job"


def ops_job() -> dg.JobDefinition:
    name = os.environ["DAGSTER_HPC_OPS_ASSET"]

    @dg.asset(name=name)
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOAD).get_results()

    defs = dg.Definitions(
        assets=[_asset],
        jobs=[dg.define_asset_job(JOB_NAME, selection=[name], executor_def=dg.in_process_executor)],
        resources={"compute": ComputeResource(mode="slurm", slurm=SlurmResource.from_env())},
    )
    return defs.resolve_job_def(JOB_NAME)


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(ops_job), instance=instance)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())

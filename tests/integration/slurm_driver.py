"""Run one Slurm-mode asset in its own process (the lifecycle tests signal or kill it).

usage: python -m tests.integration.slurm_driver ASSET_NAME PAYLOAD DAGSTER_HOME
Settings come from the environment (SlurmResource.from_env), as on a real deployment.
"""

import sys

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource


def main(name: str, payload: str, home: str) -> int:
    @dg.asset(name=name)
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload).get_results()

    instance = dg.DagsterInstance.local_temp(tempdir=home)
    resource = ComputeResource(mode="slurm", slurm=SlurmResource.from_env())
    result = dg.materialize(
        [_asset], resources={"compute": resource}, instance=instance, raise_on_error=False
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

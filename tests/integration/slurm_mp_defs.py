"""Eight Slurm-mode assets in one job for the multiprocess executor (must be importable:
each step runs in its own process and rebuilds this module). Settings come from the
environment, exactly as a deployment against a real site would set them."""

import os
from pathlib import Path

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource

# a test may pick another payload of slurm_payloads/ (each step process reads the variable)
PAYLOAD = (
    Path(__file__).parent / "slurm_payloads" / os.environ.get("DHPC_TEST_MP_PAYLOAD", "short.py")
)
N_ASSETS = 8


def _make(i: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"slurm_mp_{i}")
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOAD).get_results()

    return _asset


ASSETS = [_make(i) for i in range(N_ASSETS)]


def eight_job() -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=ASSETS,
        jobs=[
            dg.define_asset_job(
                "slurm_eight",
                selection=dg.AssetSelection.assets(*ASSETS),
                config={"execution": {"config": {"multiprocess": {"max_concurrent": N_ASSETS}}}},
            )
        ],
        resources={"compute": ComputeResource(mode="slurm", slurm=SlurmResource.from_env())},
    )
    return defs.resolve_job_def("slurm_eight")

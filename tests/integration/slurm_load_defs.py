"""Fifty trivial Slurm-mode assets in one job for the multiprocess executor, 8 at a time (the
load test; importable: each step runs in its own process and rebuilds this module). Settings
come from the environment, as a deployment against a real site sets them."""

from pathlib import Path

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource

PAYLOAD = Path(__file__).parent / "slurm_payloads" / "load_messages.py"
N_ASSETS = 50
MAX_CONCURRENT = 8


def _make(i: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"slurm_load_{i}")
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOAD).get_results()

    return _asset


ASSETS = [_make(i) for i in range(N_ASSETS)]


def load_job() -> dg.JobDefinition:
    executor = {"multiprocess": {"max_concurrent": MAX_CONCURRENT}}
    defs = dg.Definitions(
        assets=ASSETS,
        jobs=[
            dg.define_asset_job(
                "slurm_load",
                selection=dg.AssetSelection.assets(*ASSETS),
                config={"execution": {"config": executor}},
            )
        ],
        resources={"compute": ComputeResource(mode="slurm", slurm=SlurmResource.from_env())},
    )
    return defs.resolve_job_def("slurm_load")

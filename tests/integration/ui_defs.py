"""Definitions for the UI test: one slurm-mode asset (kinds + tags from hpc_asset_args) that
runs long enough to be sampled by sstat. Settings from the environment (SlurmResource.from_env);
the asset name from DAGSTER_HPC_UI_ASSET."""

import os
from pathlib import Path

import dagster as dg

from dagster_hpc.compute import ComputeResource
from dagster_hpc.kinds import hpc_asset_args

PAYLOAD = Path(__file__).parent / "slurm_payloads" / "idle_holder.py"
COMPUTE = ComputeResource(mode="slurm", keep_run_dirs="always")
NAME = os.environ.get("DAGSTER_HPC_UI_ASSET", "ui_asset")


@dg.asset(name=NAME, **hpc_asset_args(COMPUTE, kinds={"python"}))
def ui_asset(context: dg.AssetExecutionContext, compute: ComputeResource):
    """A slurm-mode asset for the UI test."""
    yield from compute.run(context, PAYLOAD).get_results()


defs = dg.Definitions(assets=[ui_asset], resources={"compute": COMPUTE})

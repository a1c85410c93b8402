"""Materializes one long-running asset in-process; the test interrupts this process (SIGINT)."""

import sys

import dagster as dg

from dagster_hpc import ComputeResource

payload, base_dir, pids_file = sys.argv[1:4]


@dg.asset
def long_running(context: dg.AssetExecutionContext, compute: ComputeResource):
    compute.run(context, payload, extra_env={"PIDS_FILE": pids_file})
    return dg.MaterializeResult()


dg.materialize(
    [long_running], resources={"compute": ComputeResource(base_dir=base_dir)}, raise_on_error=False
)

"""The example project: `dagster dev -m dagster_hpc_example.definitions` (from examples/).

Every asset runs its payload through ``ComputeResource``; DAGSTER_HPC_MODE=slurm runs the very
same assets as Slurm jobs.
"""

from pathlib import Path

import dagster as dg

import dagster_hpc_example.defs
from dagster_hpc import ComputeResource
from dagster_hpc.kinds import hpc_asset_args
from dagster_hpc.sensor import build_reconcile_sensor
from dagster_hpc_example.resources import compute_from_env

PAYLOADS = Path(__file__).parent / "payloads"
# One resource for the whole project: it picks the mode (DAGSTER_HPC_MODE), and the same object
# gives the assets their kinds ("slurm" in slurm mode) and partition/QOS tags.
COMPUTE = compute_from_env()
REGIONS = dg.StaticPartitionsDefinition(["eu", "us", "apac"])


@dg.asset(group_name="hpc_example", **hpc_asset_args(COMPUTE, kinds={"bash"}))
def measurements(
    context: dg.AssetExecutionContext, compute: ComputeResource
) -> dg.MaterializeResult:
    """A bash script generates the raw CSV (no Pipes inside: plain shell)."""
    rows = 20_000
    completed = compute.run(context, PAYLOADS / "make_numbers.sh", args=[str(rows)], pipes=False)
    return dg.MaterializeResult(metadata={**completed.metadata, "rows": rows})


@dg.asset(
    group_name="hpc_example",
    deps=[measurements],
    **hpc_asset_args(COMPUTE, kinds={"python", "polars"}),
)
def sensor_summary(context: dg.AssetExecutionContext, compute: ComputeResource):
    """Polars statistics per sensor, computed by a Python payload that reports metadata."""
    yield from compute.run(context, PAYLOADS / "summarize.py").get_results()


@dg.asset(
    group_name="hpc_example", deps=[sensor_summary], **hpc_asset_args(COMPUTE, kinds={"python"})
)
def sensor_report(context: dg.AssetExecutionContext, compute: ComputeResource):
    """Downstream of the summary: a markdown table of the top sensors."""
    yield from compute.run(context, PAYLOADS / "report.py", extras={"top_n": 3}).get_results()


@dg.multi_asset(
    group_name="hpc_example",
    specs=[
        dg.AssetSpec(
            "clean_measurements", deps=[measurements], **hpc_asset_args(COMPUTE, kinds={"python"})
        ),
        dg.AssetSpec(
            "rejected_measurements",
            deps=[measurements],
            **hpc_asset_args(COMPUTE, kinds={"python"}),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec("values_within_threshold", asset="clean_measurements", blocking=True)
    ],
)
def split_measurements(context: dg.AssetExecutionContext, compute: ComputeResource):
    """One payload, two assets and a blocking check reported through Pipes."""
    yield from compute.run(
        context, PAYLOADS / "clean_split.py", extras={"max_value": 95.0}
    ).get_results()


@dg.asset(
    group_name="hpc_example",
    deps=[measurements],
    partitions_def=REGIONS,
    **hpc_asset_args(COMPUTE, kinds={"python"}),
)
def regional_measurements(context: dg.AssetExecutionContext, compute: ComputeResource):
    """Statically partitioned: the partition key reaches the payload (Pipes + env var)."""
    yield from compute.run(context, PAYLOADS / "regional.py").get_results()


ASSETS = [measurements, sensor_summary, sensor_report, split_measurements, regional_measurements]
UNPARTITIONED = [measurements, sensor_summary, sensor_report, split_measurements]

# every unpartitioned asset of these definitions (also assets other modules add to ASSETS)
hpc_example_job = dg.define_asset_job(
    "hpc_example_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(regional_measurements),
)
regional_job = dg.define_asset_job(
    "regional_job", selection=dg.AssetSelection.assets(regional_measurements)
)

# Components under defs/ (YAML: defs/quantiles/defs.yaml) join the Python-defined assets.
defs = dg.Definitions.merge(
    dg.load_defs(dagster_hpc_example.defs, project_root=Path(__file__).parents[1]),
    dg.Definitions(
        assets=ASSETS,
        jobs=[hpc_example_job, regional_job],
        # cancels Slurm jobs of runs Dagster lost track of; free while nothing is in flight
        sensors=[build_reconcile_sensor()],
        resources={"compute": COMPUTE},
    ),
)


def resolved_job(name: str) -> dg.JobDefinition:
    return defs.resolve_job_def(name)


def example_job() -> dg.JobDefinition:
    """For ``dg.reconstructable`` (multiprocess executor): the unpartitioned assets."""
    return resolved_job("hpc_example_job")


def partitioned_job() -> dg.JobDefinition:
    """For ``dg.reconstructable``: the partitioned asset, one run per partition."""
    return resolved_job("regional_job")

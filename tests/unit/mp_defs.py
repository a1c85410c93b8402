"""A job for the multiprocess-executor test: must be importable (reconstructable)."""

from pathlib import Path

import dagster as dg

from dagster_hpc import ComputeResource

PAYLOAD = Path(__file__).parent / "payloads" / "report.py"


def _make(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOAD, extras={"greeting": name}).get_results()

    return _asset


ASSETS = [_make("mp_one"), _make("mp_two")]


defs = dg.Definitions(
    assets=ASSETS,
    jobs=[dg.define_asset_job("mp_job", selection=dg.AssetSelection.assets(*ASSETS))],
    resources={"compute": ComputeResource()},
)


def mp_job() -> dg.JobDefinition:
    return defs.resolve_job_def("mp_job")

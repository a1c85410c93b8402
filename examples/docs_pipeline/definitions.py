"""The document pipeline's Dagster definitions (from examples/, in the pipeline's environment):

    PYTHONPATH=src:examples $(scripts/docs-env.sh)/bin/dagster dev -m docs_pipeline.definitions

Everything is configured from the environment (``DAGSTER_HPC_DOCS_*``, ``DAGSTER_HPC_MODE``,
``DAGSTER_HPC_SLURM_*``): Dagster's step processes rebuild these definitions, so a setting given
in code would not reach them.
"""

from __future__ import annotations

import os

import dagster as dg

from dagster_hpc import ComputeResource
from docs_pipeline.assets import GROUP, build_assets
from docs_pipeline.features import Settings

JOB_NAME = "docs_pipeline"
MODE_ENV = "DAGSTER_HPC_MODE"


def compute_from_env() -> ComputeResource:
    """Local mode: payloads run with this interpreter (the pipeline's environment). Slurm mode:
    ``SlurmResource.from_env()``; point ``DAGSTER_HPC_SLURM_PYTHON`` at the same environment
    deployed on the cluster (scripts/docs-env.sh run there)."""
    mode = os.environ.get(MODE_ENV, "local")
    if mode == "slurm":
        from dagster_hpc.backends.slurm_resource import SlurmResource

        return ComputeResource(mode="slurm", slurm=SlurmResource.from_env())
    return ComputeResource(mode=mode)


def build_definitions() -> dg.Definitions:
    job = dg.define_asset_job(JOB_NAME, selection=dg.AssetSelection.groups(GROUP))
    return dg.Definitions(
        assets=build_assets(Settings.from_env()),
        jobs=[job],
        resources={"compute": compute_from_env()},
    )


def docs_job() -> dg.JobDefinition:
    """The four assets as one job, built from the environment at call time (each Dagster step
    process calls it again: `dg.reconstructable(docs_job)`)."""
    return build_definitions().resolve_job_def(JOB_NAME)


defs = build_definitions()

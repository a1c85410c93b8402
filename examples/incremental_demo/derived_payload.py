"""Payload of the demo's ``derived`` asset: computes ONLY the samples it is handed.

Runs through ComputeResource (a local subprocess or a Slurm job), without Dagster: it reads
``extras["incremental"]`` via dagster-pipes, computes, and writes its results to the store.
``features.py`` is shipped next to it in the run directory.
"""

from __future__ import annotations

import os
import sys

import polars as pl
from dagster_pipes import open_dagster_pipes

RUN_DIR = os.environ.get("DAGSTER_HPC_RUN_DIR", os.getcwd())
sys.path.insert(0, RUN_DIR)  # features.py is staged in the run directory (the cwd)
# The engine itself, staged by incremental_asset (ship_engine=True): no install needed.
ENGINE = os.path.join(RUN_DIR, "dagster_hpc_engine.zip")
if os.path.isfile(ENGINE):
    sys.path.insert(0, ENGINE)

from features import DERIVED, GRAPH, compute_derived  # noqa: E402

import dagster_hpc.incremental as engine  # noqa: E402

with open_dagster_pipes() as pipes:
    job = pipes.extras["incremental"]
    todo = pl.read_parquet(job["todo_file"])
    pipes.log.info(f"computing {todo.height} sample(s) of {job['feature']}")
    results = compute_derived(todo).select(
        "sample_uid", engine.PROVENANCE_BY_FIELD, engine.PROVENANCE, "result", "value_bucket"
    )
    written = engine.DeltaStore(job["store_root"], GRAPH).write(DERIVED, results)
    pipes.report_asset_materialization(
        metadata={"payload_rows_written": written, "engine_from": engine.__file__}
    )

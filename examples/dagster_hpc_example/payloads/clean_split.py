"""Multi-asset payload: split measurements into clean / rejected rows and check the clean set."""

import os
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    data_dir = Path(os.environ["EXAMPLE_DATA_DIR"])
    threshold = float(pipes.extras.get("max_value", 95.0))
    frame = pl.read_csv(data_dir / "measurements.csv")
    clean = frame.filter(pl.col("value") <= threshold)
    rejected = frame.filter(pl.col("value") > threshold)
    clean.write_parquet(data_dir / "clean.parquet")
    rejected.write_parquet(data_dir / "rejected.parquet")
    pipes.report_asset_materialization(
        asset_key="clean_measurements", metadata={"rows": clean.height}
    )
    pipes.report_asset_materialization(
        asset_key="rejected_measurements", metadata={"rows": rejected.height}
    )
    worst = float(clean["value"].max()) if clean.height else 0.0
    pipes.report_asset_check(
        check_name="values_within_threshold",
        asset_key="clean_measurements",
        passed=worst <= threshold,
        severity="ERROR",
        metadata={"max_value": worst, "threshold": threshold},
    )

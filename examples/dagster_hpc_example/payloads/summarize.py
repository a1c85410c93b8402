"""Python payload: polars statistics over the measurements, reported as Dagster metadata."""

import os
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    data_dir = Path(os.environ["EXAMPLE_DATA_DIR"])
    frame = pl.read_csv(data_dir / "measurements.csv")
    per_sensor = (
        frame.group_by("sensor")
        .agg(
            pl.len().alias("n"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").max().alias("max"),
        )
        .sort("sensor")
    )
    per_sensor.write_parquet(data_dir / "per_sensor.parquet")
    pipes.log.info(f"summarized {frame.height} rows from {per_sensor.height} sensors")
    print(per_sensor.head(5))
    pipes.report_asset_materialization(
        metadata={
            "rows": frame.height,
            "sensors": per_sensor.height,
            "mean_value": round(float(frame["value"].mean()), 4),
            "path": str(data_dir / "per_sensor.parquet"),
        }
    )

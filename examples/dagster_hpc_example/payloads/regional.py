"""Partitioned payload: one region's share of the measurements (the partition key picks it)."""

import os
import zlib
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    region = pipes.partition_key
    assert region == os.environ["DAGSTER_HPC_PARTITION_KEY"]
    data_dir = Path(os.environ["EXAMPLE_DATA_DIR"])
    frame = pl.read_csv(data_dir / "measurements.csv")
    # deterministic assignment of sensors to regions (stable across processes, unlike hash())
    sensors = [
        s
        for s in frame["sensor"].unique().sort()
        if zlib.crc32(f"{s}".encode()) % 3 == ["eu", "us", "apac"].index(region)
    ]
    mine = frame.filter(pl.col("sensor").is_in(sensors))
    mine.write_parquet(data_dir / f"region_{region}.parquet")
    print(f"region {region}: {len(sensors)} sensors, {mine.height} rows")
    pipes.report_asset_materialization(
        metadata={"region": region, "sensors": len(sensors), "rows": mine.height}
    )

"""Downstream payload: reads the upstream summary and writes a small markdown report."""

import os
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    data_dir = Path(os.environ["EXAMPLE_DATA_DIR"])
    per_sensor = pl.read_parquet(data_dir / "per_sensor.parquet")
    top = per_sensor.sort("mean", descending=True).head(pipes.extras.get("top_n", 3))
    lines = ["| sensor | mean |", "|---|---|"] + [
        f"| {s} | {m:.2f} |" for s, m in top.select("sensor", "mean").iter_rows()
    ]
    report = "\n".join(lines)
    (data_dir / "report.md").write_text(report + "\n")
    print(report)
    pipes.report_asset_materialization(
        metadata={"top_sensor": top["sensor"][0], "report": {"raw_value": report, "type": "md"}}
    )

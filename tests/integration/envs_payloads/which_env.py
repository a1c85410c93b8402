"""Reports which interpreter and environment the payload runs in, computed with polars."""

import shutil
import sys

import polars as pl
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    df = pl.DataFrame({"x": list(range(100))})
    pipes.report_asset_materialization(
        metadata={
            "executable": sys.executable,
            "prefix": sys.prefix,
            "polars": pl.__version__,
            "sum_x": int(df["x"].sum()),
            "python_on_path": shutil.which("python") or "",
        }
    )

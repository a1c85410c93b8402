"""Imports a module shipped with extra_files and reads a data file shipped beside it."""

from pathlib import Path

import helper
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(
        metadata={"answer": helper.ANSWER, "data": Path("settings.txt").read_text().strip()}
    )

"""A payload that runs 3 s printing nothing: round trips must not grow with a job's duration."""

import time

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    time.sleep(3)
    pipes.report_asset_materialization(metadata={"ok": 1})

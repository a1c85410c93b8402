"""A payload that runs ``extras["sleep_s"]`` seconds (3 by default) printing nothing: round trips
must not grow with a job's duration."""

import time

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    time.sleep(float(pipes.extras.get("sleep_s", 3)))
    pipes.report_asset_materialization(metadata={"ok": 1})

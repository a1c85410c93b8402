"""Prints a timestamped line every 0.5 s for 4 s, then reports when it finished."""

import time

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    for i in range(8):
        print(f"tick {i} at {time.time():.3f}", flush=True)
        time.sleep(0.5)
    pipes.report_asset_materialization(metadata={"finished_at": time.time()})

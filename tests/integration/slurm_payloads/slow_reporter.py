"""Runs ~15 s: a Pipes log line first, then a numbered stdout line every 0.5 s, then metadata.

The reattach test kills the Dagster process that submitted it in the middle; the attempt that
reattaches must still see every line (from offset 0) and the metadata.
"""

import time

from dagster_pipes import open_dagster_pipes

LINES = 30

with open_dagster_pipes() as pipes:
    pipes.log.info("slow_reporter: started")
    for i in range(LINES):
        print(f"step {i}", flush=True)
        time.sleep(0.5)
    pipes.report_asset_materialization(metadata={"lines_printed": LINES})

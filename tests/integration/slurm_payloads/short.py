"""A short job (~3 s) so that several of them overlap in the queue."""

import time

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    print("working", flush=True)
    time.sleep(3)
    pipes.report_asset_materialization(metadata={"ok": True})

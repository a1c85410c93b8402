"""Holds ~80 MB and sleeps on its CPUs (wastes the allocation on purpose), then reports."""

import time

from dagster_pipes import open_dagster_pipes

HOLD_S = 34

with open_dagster_pipes() as pipes:
    ballast = bytearray(80 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):  # touch every page: resident, not just reserved
        ballast[i] = 1
    pipes.log.info(f"holding {len(ballast) >> 20} MB, sleeping {HOLD_S} s")
    time.sleep(HOLD_S)
    pipes.report_asset_materialization(metadata={"held_mb": len(ballast) >> 20})

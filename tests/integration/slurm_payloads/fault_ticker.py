"""Fault tests: TICKS numbered Pipes log messages and stdout lines, half before and half after a
`release` file appears in the run directory (the test disrupts the cluster in between). A
requeued attempt (DAGSTER_HPC_ATTEMPT > 1) labels its lines with its number."""

import os
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes

TICKS = 20
RELEASE = Path(os.environ["DAGSTER_HPC_RUN_DIR"]) / "release"
ATTEMPT = os.environ.get("DAGSTER_HPC_ATTEMPT", "1")
LABEL = "" if ATTEMPT == "1" else f" (attempt {ATTEMPT})"
WAIT_MAX_S = 300

with open_dagster_pipes() as pipes:
    for i in range(TICKS):
        if i == TICKS // 2:
            deadline = time.monotonic() + WAIT_MAX_S
            while not RELEASE.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        pipes.log.info(f"tick {i}{LABEL}")
        print(f"line {i}{LABEL}", flush=True)
    pipes.report_asset_materialization(metadata={"ticks": TICKS, "released": RELEASE.exists()})

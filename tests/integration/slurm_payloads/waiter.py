"""Waits (bounded) until the test creates a `release` file in its run directory, then reports."""

import os
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes

RELEASE = Path(os.environ["DAGSTER_HPC_RUN_DIR"]) / "release"

with open_dagster_pipes() as pipes:
    print("waiting for release", flush=True)
    deadline = time.monotonic() + 300
    while not RELEASE.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    pipes.report_asset_materialization(metadata={"released": RELEASE.exists()})

"""Prints a line, then waits until the test (having seen that line in Dagster's log) creates a flag."""

import sys
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes

# Long enough for a loaded machine; the test fails (exit 1) instead of hanging.
FLAG_TIMEOUT_S = 60

with open_dagster_pipes() as pipes:
    print("waiting for flag", flush=True)
    flag = Path(sys.argv[1])
    deadline = time.monotonic() + FLAG_TIMEOUT_S
    while not flag.exists():
        if time.monotonic() > deadline:
            sys.exit("the flag never came: log lines did not reach Dagster while the job ran")
        time.sleep(0.05)
    pipes.report_asset_materialization(metadata={"saw_flag": True})

"""Sleeps ``extras["sleep_s"]``, then reports when it ran (or exits 3 when ``extras["fail"]``)."""

import os
import socket
import sys
import time

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    started = time.time()
    print(f"started on {socket.gethostname()}", flush=True)
    time.sleep(float(pipes.extras.get("sleep_s", 0)))
    if pipes.extras.get("fail"):
        print("failing on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    pipes.report_asset_materialization(
        metadata={"started": started, "ended": time.time(), "pid": os.getpid()}
    )

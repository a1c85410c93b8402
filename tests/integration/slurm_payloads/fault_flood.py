"""Fault tests: floods stdout with FLOOD_BYTES (1 GiB by default) of 64-byte lines, then reports."""

import os
import sys

from dagster_pipes import open_dagster_pipes

FLOOD_BYTES = int(os.environ.get("DHPC_FLOOD_BYTES", str(1 << 30)))
BLOCK = b"".join(b"flood %057d\n" % i for i in range((1 << 20) // 64))  # 1 MiB

with open_dagster_pipes() as pipes:
    pipes.log.info("flood: started")
    for _ in range(FLOOD_BYTES // len(BLOCK)):
        sys.stdout.buffer.write(BLOCK)
    sys.stdout.buffer.flush()
    pipes.log.info("flood: done")
    pipes.report_asset_materialization(metadata={"flood_bytes": FLOOD_BYTES})

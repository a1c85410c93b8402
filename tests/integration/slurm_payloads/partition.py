"""One partition (or array item) of the allocation-mode tests: logs, prints, reports metadata;
fails on purpose for the key in DHPC_FAIL_KEY until the file DHPC_FAIL_UNLESS exists."""

import os
import sys

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    key = pipes.partition_key if pipes.is_partition_step else pipes.extras["dagster_hpc_item_key"]
    pipes.log.info(f"working on {key}")
    print(f"stdout of {key}", flush=True)
    fail_key = os.environ.get("DHPC_FAIL_KEY", "")
    if key == fail_key and not os.path.exists(os.environ.get("DHPC_FAIL_UNLESS", "/nonexistent")):
        print(f"{key} fails on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    digits = "".join(c for c in key if c.isdigit()) or "0"
    pipes.report_asset_materialization(
        metadata={"partition": key, "square": int(digits) ** 2, "extras_seen": sorted(pipes.extras)}
    )

"""A payload that exercises everything Pipes carries: logs, metadata, a check, extras, env."""

import os
import sys

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    for i in range(5):
        print(f"progress {i}")
    print("a warning on stderr", file=sys.stderr)
    pipes.log.info("via pipes log")
    pipes.report_asset_materialization(
        metadata={
            "extras_seen": pipes.extras.get("greeting", ""),
            "env_seen": os.environ.get("MY_SETTING", ""),
            "partition_env": os.environ.get("DAGSTER_HPC_PARTITION_KEY", ""),
            "partition_pipes": pipes.partition_key if pipes.is_partition_step else "",
            "run_id_env": os.environ.get("DAGSTER_HPC_RUN_ID", ""),
            "args": " ".join(sys.argv[1:]),
        }
    )
    if pipes.extras.get("with_check"):
        pipes.report_asset_check("positive", passed=False, severity="ERROR", metadata={"value": -1})

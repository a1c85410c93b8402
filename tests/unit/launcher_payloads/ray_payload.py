"""Payload for the Ray launcher tests: connects as the launcher told it (RAY_ADDRESS), records
the nodes it sees, and reports them through Dagster Pipes when asked to (--pipes)."""

import json
import os
import sys
from pathlib import Path

import ray  # the fake in tests (on PYTHONPATH or shipped beside the payload)

ray.init(address=os.environ["RAY_ADDRESS"])
seen = {
    "ray_address": os.environ["RAY_ADDRESS"],
    "hosts": sorted({n["host"] for n in ray.nodes()}),
    "nodes": len(ray.nodes()),
}
Path("payload-seen.json").write_text(json.dumps(seen))
if "--pipes" in sys.argv:
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        pipes.report_asset_materialization(metadata=seen)
code = int(sys.argv[sys.argv.index("--exit") + 1]) if "--exit" in sys.argv else 0
sys.exit(code)

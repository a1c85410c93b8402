"""Payload for the srun launcher tests: every task records what it saw; rank 0 reports all of
them through Dagster Pipes once every task has written its record (bounded wait).

``--fail-rank N``: task N exits 3 at once and every other task sleeps, so a launcher without
kill-on-bad-exit semantics would hang until the time limit.
"""

import json
import os
import socket
import sys
import time
from pathlib import Path

# How long rank 0 waits for the other tasks' records (tasks start within a second or two).
RECORDS_TIMEOUT_S = 60
SLEEP_WHEN_OTHER_FAILS_S = 300

rank = int(os.environ["SLURM_PROCID"])
ntasks = int(os.environ["SLURM_NTASKS"])
fail_rank = int(sys.argv[sys.argv.index("--fail-rank") + 1]) if "--fail-rank" in sys.argv else None

record = {
    "host": socket.gethostname(),
    "procid": rank,
    "localid": os.environ.get("SLURM_LOCALID"),
    "nodeid": os.environ.get("SLURM_NODEID"),
    "step": os.environ.get("SLURM_STEP_ID"),
    "pid": os.getpid(),
}
tmp = Path(f".rank-{rank}.tmp")
tmp.write_text(json.dumps(record))
tmp.rename(f"rank-{rank}.json")
print(f"task {rank}/{ntasks} on {record['host']}", flush=True)

if fail_rank is not None:
    if rank == fail_rank:
        sys.exit(3)
    time.sleep(SLEEP_WHEN_OTHER_FAILS_S)
    sys.exit(0)
if rank != 0:
    sys.exit(0)

deadline = time.monotonic() + RECORDS_TIMEOUT_S
while len(list(Path().glob("rank-*.json"))) < ntasks:
    if time.monotonic() > deadline:
        sys.exit(
            f"only {len(list(Path().glob('rank-*.json')))} of {ntasks} task records after {RECORDS_TIMEOUT_S} s"
        )
    time.sleep(0.1)
seen = [json.loads(p.read_text()) for p in sorted(Path().glob("rank-*.json"))]

from dagster_pipes import open_dagster_pipes  # noqa: E402 - only rank 0 talks to Dagster

with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(
        metadata={
            "hosts": sorted({r["host"] for r in seen}),
            "procids": sorted(r["procid"] for r in seen),
            "pairs": sorted(f"{r['host']}:{r['procid']}" for r in seen),
            "ntasks": ntasks,
            "steps": sorted({str(r["step"]) for r in seen}),
            "pids": len({r["pid"] for r in seen}),
        }
    )

"""Fifty trivial Slurm-mode assets in one job for the multiprocess executor, 8 at a time (the
load test; importable: each step runs in its own process and rebuilds this module). Settings
come from the environment, as a deployment against a real site sets them.

The steps start from a forkserver that has imported this module (Dagster's ``forkserver`` start
method: the multiprocess executor, each step still its own process): with ``spawn`` every one
of the 50 processes imports Dagster, dagster_hpc and this module afresh (~3.3 s of CPU each),
which made the run take about three minutes on 2 cores, mostly imports, not Slurm or Pipes."""

import dagster as dg

from tests.integration.slurm_support import PAYLOADS, multiprocess_job, payload_assets

PAYLOAD = PAYLOADS / "load_messages.py"
N_ASSETS = 50
MAX_CONCURRENT = 8
ASSETS = payload_assets("slurm_load", N_ASSETS, PAYLOAD)


def load_job() -> dg.JobDefinition:
    return multiprocess_job(
        "slurm_load",
        ASSETS,
        max_concurrent=MAX_CONCURRENT,
        start_method={"forkserver": {"preload_modules": [__name__]}},
    )

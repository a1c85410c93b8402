"""Eight Slurm-mode assets in one job for the multiprocess executor (must be importable:
each step runs in its own process and rebuilds this module). Settings come from the
environment, exactly as a deployment against a real site would set them."""

import os

import dagster as dg

from tests.integration.slurm_support import PAYLOADS, multiprocess_job, payload_assets

# a test may pick another payload of slurm_payloads/ (each step process reads the variable)
PAYLOAD = PAYLOADS / os.environ.get("DHPC_TEST_MP_PAYLOAD", "short.py")
N_ASSETS = 8
ASSETS = payload_assets("slurm_mp", N_ASSETS, PAYLOAD)


def eight_job() -> dg.JobDefinition:
    return multiprocess_job("slurm_eight", ASSETS, max_concurrent=N_ASSETS)

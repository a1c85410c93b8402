"""A reconstructable one-asset job for the reattach test (its driver process gets SIGKILLed).

usage: python -m tests.integration.slurm_reattach_defs
The asset name comes from DAGSTER_HPC_REATTACH_ASSET (unique per test, so its Slurm jobs can be
counted by name); Slurm settings from the environment (SlurmResource.from_env); the instance from
DAGSTER_HOME (persistent: the test re-executes the killed run from failure in it).
"""

import os
import sys

import dagster as dg

from tests.integration.slurm_support import PAYLOADS, drive, driver_job, payload_asset

PAYLOAD = PAYLOADS / "slow_reporter.py"
JOB_NAME = "reattach_job"


def reattach_job() -> dg.JobDefinition:
    return driver_job(JOB_NAME, payload_asset(os.environ["DAGSTER_HPC_REATTACH_ASSET"], PAYLOAD))


if __name__ == "__main__":
    sys.exit(drive(reattach_job))

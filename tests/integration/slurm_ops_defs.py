"""A reconstructable one-asset job whose driver process the reconcile test SIGKILLs.

usage: python -m tests.integration.slurm_ops_defs
The asset name comes from DAGSTER_HPC_OPS_ASSET (unique per test, so its Slurm jobs can be found
by name), the payload sleeps until cancelled; Slurm settings from the environment
(SlurmResource.from_env); the instance from DAGSTER_HOME (persistent: its launch records are
what the sensor reads).
"""

import os
import sys

import dagster as dg

from tests.integration.slurm_support import PAYLOADS, drive, driver_job, payload_asset

PAYLOAD = PAYLOADS / "sleeper.py"
JOB_NAME = "ops_job"


def ops_job() -> dg.JobDefinition:
    return driver_job(JOB_NAME, payload_asset(os.environ["DAGSTER_HPC_OPS_ASSET"], PAYLOAD))


if __name__ == "__main__":
    sys.exit(drive(ops_job))

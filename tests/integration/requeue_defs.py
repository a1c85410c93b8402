"""A reconstructable one-asset requeue job (the reattach-during-attempt-2 test SIGKILLs its driver).

usage: python -m tests.integration.requeue_defs
The asset name comes from DAGSTER_HPC_REQUEUE_ASSET; Slurm settings from the environment
(SlurmResource.from_env); the instance from DAGSTER_HOME (the test re-executes the killed run).
"""

import os
import sys

import dagster as dg

from tests.integration.slurm_support import PAYLOADS, drive, driver_job, payload_asset

PAYLOAD = PAYLOADS / "checkpointer.py"
JOB_NAME = "requeue_job"
ASSET_ENV = "DAGSTER_HPC_REQUEUE_ASSET"
# Seconds per attempt: time limit 1 minute, the checkpoint signal 58 s before it.
SHORT_ATTEMPTS = {"time_limit": "1", "signal_before_timeout": "USR2@58", "mem": "256M"}
# No pre-timeout signal within a test (4 minutes away): attempts end by the payload's own
# requeue_after_steps or by preemption.
LONG_ATTEMPTS = {"time_limit": "5", "signal_before_timeout": "USR2@60", "mem": "256M"}
# Attempt 2 of the reattach test runs this many 0.2 s steps: long enough to be reattached to
# while it runs (the driver is killed as soon as attempt 2 starts).
FINAL_STEPS = 60


def requeue_job() -> dg.JobDefinition:
    queue = {**LONG_ATTEMPTS, "requeue": True, "max_requeues": 2}
    extras = {"finish_on_attempt": 2, "requeue_after_steps": 3, "final_steps": FINAL_STEPS}
    asset = payload_asset(os.environ[ASSET_ENV], PAYLOAD, queue=queue, extras=extras)
    return driver_job(JOB_NAME, asset)


if __name__ == "__main__":
    sys.exit(drive(requeue_job))

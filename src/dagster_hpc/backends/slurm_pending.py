"""A job pending for a reason that can never clear fails its step (and is cancelled).

Slurm keeps a job that exceeds a per-job limit pending forever (``nodes=5`` on a 4-node
partition: PartitionNodeLimit); the step used to wait forever, paying nothing but blocking the
run. The preflight refuses most such requests before submitting; this catches what it cannot
see (QOS and association limits, options passed through ``extra_directives``, limits changed
after the preflight was cached).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dagster_hpc.backends.base import JobHandle, JobState, JobStatus
from dagster_hpc.errors import SlurmJobError

# Reasons (squeue %r) that describe the job itself, not the cluster's current load: per-job
# limits of the partition, QOS or association, and impossible dependencies or features.
HOPELESS_REASONS = frozenset(
    {
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "DependencyNeverSatisfied",
        "InvalidAccount",
        "InvalidQOS",
        "QOSMaxNodePerJobLimit",
        "QOSMaxWallDurationPerJobLimit",
        "QOSMaxCpuPerJobLimit",
        "QOSMaxGRESPerJob",
        "QOSMaxMemoryPerJob",
        "AssocMaxNodesPerJobLimit",
        "AssocMaxWallDurationPerJobLimit",
        "AssocMaxCpuPerJobLimit",
        "AssocMaxGRESPerJob",
        "AssocMaxMemPerJob",
    }
)
# How long such a reason must persist before the step gives up. PartitionNodeLimit also shows
# while nodes of the partition are DOWN or DRAINED (which an admin may fix): a short wait rides
# out a node that is just rebooting, without letting an impossible job block a run for hours.
HOPELESS_PENDING_GRACE_S = 60.0


class PendingWatch:
    """Remembers since when each job has been pending for a hopeless reason."""

    def __init__(self, *, cluster: str, grace_s: float | None = None):
        self._cluster = cluster
        self._grace_s = HOPELESS_PENDING_GRACE_S if grace_s is None else grace_s
        self._since: dict[str, float] = {}

    def check(
        self, handle: JobHandle, status: JobStatus, cancel: Callable[[JobHandle], None]
    ) -> None:
        """Cancel the job and raise SlurmJobError once a hopeless reason outlived the grace."""
        reason = status.reason.strip()
        if status.state is not JobState.PENDING or reason not in HOPELESS_REASONS:
            self._since.pop(handle.job_id, None)
            return
        first = self._since.setdefault(handle.job_id, time.monotonic())
        if time.monotonic() - first < self._grace_s:
            return
        cancel(handle)
        raise SlurmJobError(
            f"Slurm job {handle.job_id} on {self._cluster} can never start: it has been pending "
            f"with reason {reason} for {self._grace_s:.0f} s (a per-job limit of the partition, "
            "QOS or account, or an impossible dependency/feature). It was cancelled. Lower the "
            "request (nodes, time_limit, GPUs, extra_directives) or pick another partition/QOS; "
            "`scontrol show partition` and `sacctmgr show qos` list the limits.",
            state="PENDING",
            job_id=handle.job_id,
            run_dir=handle.run_dir,
        )

"""The ONE place that touches Dagster internals (see STYLE.md, point 6).

Dagster 1.13 keeps the launch handle used for reattach internal
(``dagster._core.pipes.reattach``). We record the Slurm job's handle there right after
``sbatch``, before waiting, so a restarted Dagster (or a retry) can find the job again.
``tests/unit/test_dagster_adapter.py`` fails loudly if an upgrade moves these names.
"""

from __future__ import annotations

import json
from typing import Any

from dagster._core.pipes.reattach import (  # internal: confined to this module
    PipesLaunchHandle,
    find_latest_launch_handle,
    record_external_launch,
    record_external_reattach,
)

from dagster_hpc.backends.base import JobHandle

# client_name under which dagster-hpc records its launches (distinguishes them from other clients).
CLIENT_NAME = "dagster-hpc"


def record_launch(context: Any, handle: JobHandle) -> PipesLaunchHandle:
    """Persist ``handle`` as an engine event of the current step (call before waiting)."""
    return record_external_launch(
        context,
        client_name=CLIENT_NAME,
        external_run_id=f"{handle.backend}:{handle.cluster}:{handle.job_id}",
        extras={"dagster_hpc_handle": json.dumps(handle.to_dict())},
    )


def latest_launch(context: Any) -> JobHandle | None:
    """The handle recorded by this step in this run or its ancestors (reattach), if any."""
    found = find_latest_launch_handle(context, client_name=CLIENT_NAME)
    if found is None:
        return None
    raw = found.extras.get("dagster_hpc_handle")
    return JobHandle.from_dict(json.loads(raw)) if raw else None


def record_reattach(context: Any) -> PipesLaunchHandle | None:
    """Re-record the latest handle in the current run (a later retry of THIS run finds it, and
    the launch -> reattach chain stays visible in the event log)."""
    found = find_latest_launch_handle(context, client_name=CLIENT_NAME)
    return None if found is None else record_external_reattach(context, found)

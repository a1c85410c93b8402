"""The ONE place that touches Dagster internals (see STYLE.md, point 6).

Dagster 1.13 keeps the launch handle used for reattach internal
(``dagster._core.pipes.reattach``). We record the Slurm job's handle there right after
``sbatch``, before waiting, so a restarted Dagster (or a retry) can find the job again.
``tests/unit/test_dagster_adapter.py`` fails loudly if an upgrade moves these names.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
from dagster._core.pipes.reattach import (  # internal: confined to this module
    PipesLaunchHandle,
    find_latest_launch_handle,
    find_latest_launch_handle_for_run,
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
    found = _latest_record(context)
    if found is None:
        return None
    raw = found.extras.get("dagster_hpc_handle")
    return JobHandle.from_dict(json.loads(raw)) if raw else None


def record_reattach(context: Any) -> PipesLaunchHandle | None:
    """Re-record the latest handle in the current run (a later retry of THIS run finds it, and
    the launch -> reattach chain stays visible in the event log)."""
    found = _latest_record(context)
    return None if found is None else record_external_reattach(context, found)


def _latest_record(context: Any) -> PipesLaunchHandle | None:
    """This run first, then its ancestry. Dagster walks up only across runs tagged as resume
    retries (the UI's "from failure", run retries); ``execute_job(reexecution_options=
    ReexecutionOptions.from_failure(...))`` creates its run without that tag. So we also look in
    the parent run when THIS step did not succeed there (it died with its process, or failed): a
    step that succeeded in the parent is being recomputed on purpose and must launch fresh."""
    found = find_latest_launch_handle(context, client_name=CLIENT_NAME)
    if found is not None:
        return found
    run = context.run
    if not run.parent_run_id:
        return None
    instance = context.instance
    step_key = context.get_step_execution_context().step.key
    succeeded = instance.all_logs(run.parent_run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    if any(entry.step_key == step_key for entry in succeeded):
        return None
    parent = instance.get_run_by_id(run.parent_run_id)
    if parent is None:
        return None
    return find_latest_launch_handle_for_run(
        instance=instance, run=parent, step_key=step_key, client_name=CLIENT_NAME
    )


def report_run_event(instance: Any, run_id: str, message: str) -> None:
    """An engine event in the event log of ``run_id`` from outside the run (the reconcile
    sensor: what it cancelled and why shows up in the run's own timeline)."""
    run = instance.get_run_by_id(run_id)
    if run is not None:
        instance.report_engine_event(message, run)
